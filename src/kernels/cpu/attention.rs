//! Causal (optionally sliding-window) grouped-query attention with RoPE, forward and backward,
//! straight from the projections' `[batch, seq, heads * head_dim]` layout and back to it. With
//! a window of `w` tokens, row `i` sees keys `i + 1 - w ..= i`, and a block of query rows
//! computes scores only from the first key any of its rows sees: tiles wholly outside the
//! window are never formed, so the cost is `O(seq * w)`.
//!
//! burn's path splits heads (a copy), rotates q and k (slices, a negation, a concatenation, two
//! multiplies and an add: six passes), repeats K and V per query head (two more copies), then
//! materializes `[batch, heads, seq, seq]` scores, mask and softmax, and keeps them for the
//! backward. Here each (batch, query head) is one task: rotated Q and K are computed once,
//! scores are formed 64 query rows at a time against only the keys they can see (half the
//! matmul work of a full square), and the backward recomputes the probabilities from the
//! per-row log-sum-exp, as flash attention does, so memory stays `O(seq)` per head. Small
//! matmuls go through the `gemm` crate single-threaded; the parallelism is across tasks.
//!
//! Backward, per query row block: `P = exp(S - lse)`, `dP = dO V^T`, `dS = P (dP - rowsum(dO
//! O))`, `dQ = scale dS K`, `dK += scale dS^T Q`, `dV += P^T dO`; then the rotation is undone
//! on dQ and dK (its transpose). Each task owns one KV head of one sequence, so the query
//! heads sharing it accumulate into its dK and dV in a fixed order: deterministic.

// simd_fn! compiles each body three times; the lint sees the copies too.
#![allow(clippy::too_many_arguments)]

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::op::{Args, flex, give, upstream, values};
use super::simd::{self, exp, simd_fn};

/// Query rows per block.
const BR: usize = 64;

/// How a tensor of `n` heads lays out its rows: the projections' `[b, rows, n * hd]`, or
/// split heads `[b, n, rows, hd]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rows,
    Heads,
}

impl Layout {
    /// Where row 0 of head `head` of sequence `bi` starts, and the stride between its rows.
    fn at(self, bi: usize, head: usize, n: usize, rows: usize, hd: usize) -> (usize, usize) {
        match self {
            Layout::Rows => (bi * rows * n * hd + head * hd, n * hd),
            Layout::Heads => ((bi * n + head) * rows * hd, hd),
        }
    }
}

/// The shapes: `t` query rows at positions `start..start + t` against `s = start + t` keys.
/// In [`Layout::Rows`] (RoPE applied here, `start` 0) `q` is `[b, t, h * hd]`, `k` and `v`
/// `[b, t, kv * hd]`, the tables `[t, hd]`; in [`Layout::Heads`] (already rotated) `q` is `[b,
/// h, t, hd]`, `k` and `v` `[b, kv, s, hd]`. The output and the gradients take the inputs'
/// layouts.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub kv: usize,
    pub hd: usize,
    /// Keys each query sees (itself included); `usize::MAX` for full causal attention.
    pub w: usize,
    /// Keys before the first query (cached ones); `s = start + t` keys in all.
    pub start: usize,
    pub layout: Layout,
    /// Packed documents, or left-padded rows being generated: each query row's position
    /// within its sequence is given (`pos`, `[b, t]`) and it sees only keys from `start + row -
    /// pos` on. In [`Layout::Rows`] the tables are per token, `[b * t, hd]`, gathered at those
    /// positions; in [`Layout::Heads`] q and k come rotated.
    pub docs: bool,
}

impl Dims {
    /// Keys in all.
    fn s(&self) -> usize {
        self.start + self.t
    }

    /// The first key query row `row` of sequence `bi` sees: the window's and, with packed
    /// documents, its document's first (both grow with the row).
    fn first(&self, pos: &[u32], bi: usize, row: usize) -> usize {
        let p = self.start + row;
        let w = (p + 1).saturating_sub(self.w);
        match self.docs {
            true => w.max(p - pos[bi * self.t + row] as usize),
            false => w,
        }
    }

    /// The key columns `c0..n` that query rows `r0..r0 + m` of sequence `bi` need.
    fn block(&self, pos: &[u32], bi: usize, r0: usize, m: usize) -> (usize, usize) {
        (self.first(pos, bi, r0), self.start + r0 + m)
    }

    /// Query row `row`'s live keys within the columns from `c0`, relative to `c0`.
    fn live(&self, pos: &[u32], bi: usize, row: usize, c0: usize) -> std::ops::Range<usize> {
        self.first(pos, bi, row).max(c0) - c0..self.start + row + 1 - c0
    }

    /// Where the RoPE tables' row for row `ti` of sequence `bi` starts.
    fn tab(&self, bi: usize, ti: usize) -> std::ops::Range<usize> {
        let r = if self.docs { bi * self.t + ti } else { ti };
        r * self.hd..(r + 1) * self.hd
    }

    /// Where query head `head`'s rows of sequence `bi` start in q, the output and its gradient.
    fn q_at(&self, bi: usize, head: usize) -> (usize, usize) {
        self.layout.at(bi, head, self.h, self.t, self.hd)
    }

    /// Where KV head `g`'s rows of sequence `bi` start in k and v.
    fn kv_at(&self, bi: usize, g: usize) -> (usize, usize) {
        self.layout.at(bi, g, self.kv, self.s(), self.hd)
    }
}

/// What the forward gives: the output in `q`'s layout, and for the backward each row's
/// log-sum-exp (`[b, h, t]`) and, in [`Layout::Rows`], the rotated Q (`[b, h, t, hd]`) and K
/// (`[b, kv, t, hd]`) it computed (in [`Layout::Heads`] the inputs are already those).
pub struct Forward {
    pub out: Vec<f32>,
    pub rotated: Option<[Vec<f32>; 2]>,
    pub lse: Vec<f32>,
}

/// The gradients in the inputs' layouts.
pub struct Grads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each task writes its own rows and columns (see the callers).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// A method, not the field: closures capture all of `Shared` (Send), not the raw pointer.
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the callers stay inside the buffer.
        unsafe { self.0.add(i) }
    }
}

/// `dst[m x n] = (acc ? dst : 0) + beta lhs[m x k] rhs[k x n]`, each matrix given by its
/// pointer and (row, column) element strides; the destination's columns are contiguous.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    // SAFETY: the caller gives pointers valid for the shapes and strides.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            acc,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// RoPE in the rotate-half layout, as `model::rope::apply` computes it: `y = x c + rot(x) s`,
/// `rot(x) = [-x2, x1]`.
#[inline(always)]
fn rope_row(x: &[f32], c: &[f32], s: &[f32], y: &mut [f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        y[i] = x[i] * c[i] - x[i + half] * s[i];
        y[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
    }
}

/// The transpose of [`rope_row`]'s rotation: the gradient of its input from its output's.
#[inline(always)]
fn unrope_row(dy: &[f32], c: &[f32], s: &[f32], dx: &mut [f32]) {
    let half = dy.len() / 2;
    for i in 0..half {
        dx[i] = dy[i] * c[i] + dy[i + half] * s[i + half];
        dx[i + half] = dy[i + half] * c[i + half] - dy[i] * s[i];
    }
}

/// `x` `[b, t, n * hd]` rotated into `[b, n, t, hd]`.
fn rope_heads(x: &[f32], d: Dims, n: usize, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let (t, hd) = (d.t, d.hd);
    let mut out = vec![0f32; d.b * n * t * hd];
    out.par_chunks_mut(t * hd).enumerate().for_each(|(bn, o)| {
        let (bi, head) = (bn / n, bn % n);
        for ti in 0..t {
            let src = &x[(bi * t + ti) * n * hd + head * hd..][..hd];
            let tab = d.tab(bi, ti);
            rope_row(src, &cos[tab.clone()], &sin[tab], &mut o[ti * hd..][..hd]);
        }
    });
    out
}

simd_fn! {
    /// `x <- exp(x - max) / sum` in place; returns the log-sum-exp.
    fn softmax_row(x: &mut [f32]) -> f32 {
        let mx = simd::max(x);
        for v in x.iter_mut() {
            *v = exp(*v - mx);
        }
        let l = simd::sum_of(x, |_, v| v);
        let inv = 1.0 / l;
        for v in x.iter_mut() {
            *v *= inv;
        }
        mx + l.ln()
    }
}

simd_fn! {
    /// From scores `s` (in place) to `dS = P (dP - delta)` in `dp`, with `P = exp(s - lse)`
    /// left in `s` for `dV`.
    fn grad_row(s: &mut [f32], dp: &mut [f32], lse: f32, delta: f32) {
        for (s, dp) in s.iter_mut().zip(dp.iter_mut()) {
            *s = exp(*s - lse);
            *dp = *s * (*dp - delta);
        }
    }
}

/// `S = scale Q[r0..r0+m] K[0..n]^T` into `s` (row stride `s()`).
fn scores(s: &mut [f32], q: &[f32], k: &[f32], r0: usize, (m, n): (usize, usize), d: Dims, scale: f32) {
    // SAFETY: q holds rows r0..r0 + m of hd, k rows 0..n of hd, s m rows of stride s() >= n.
    unsafe {
        mm((m, n, d.hd), s.as_mut_ptr(), d.s(), false, (q[r0 * d.hd..].as_ptr(), d.hd, 1), (k.as_ptr(), 1, d.hd), scale)
    }
}

/// Causal attention of `q`, `k`, `v` (layouts in [`Dims`]) with RoPE tables `cos`, `sin`
/// (unused in [`Layout::Heads`]) and, with `d.docs`, each row's position in its document.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], cos: &[f32], sin: &[f32], pos: &[u32], d: Dims) -> Forward {
    let (t, s_len, hd) = (d.t, d.s(), d.hd);
    // Split, rotated heads: computed from the projections, or the inputs themselves.
    let rotated =
        (d.layout == Layout::Rows).then(|| [rope_heads(q, d, d.h, cos, sin), rope_heads(k, d, d.kv, cos, sin)]);
    let (qr, kr) = rotated.as_ref().map_or((q, k), |[q, k]| (&q[..], &k[..]));
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; d.b * t * d.h * hd];
    let mut lse = vec![0f32; d.b * d.h * t];
    let dst = Shared(out.as_mut_ptr());
    lse.par_chunks_mut(t).enumerate().for_each_init(
        || vec![0f32; BR * s_len],
        |s, (bh, lse)| {
            let (bi, head) = (bh / d.h, bh % d.h);
            let g = head / (d.h / d.kv);
            let (qh, kh) = (&qr[bh * t * hd..][..t * hd], &kr[(bi * d.kv + g) * s_len * hd..][..s_len * hd]);
            let ((vo, vs), (oo, os)) = (d.kv_at(bi, g), d.q_at(bi, head));
            for r0 in (0..t).step_by(BR) {
                let m = (t - r0).min(BR);
                let (c0, n) = d.block(pos, bi, r0, m);
                scores(s, qh, &kh[c0 * hd..], r0, (m, n - c0), d, scale);
                for i in 0..m {
                    let row = &mut s[i * s_len..i * s_len + n - c0];
                    let live = d.live(pos, bi, r0 + i, c0);
                    lse[r0 + i] = softmax_row(&mut row[live.clone()]);
                    row[..live.start].fill(0.0);
                    row[live.end..].fill(0.0);
                }
                // SAFETY: this task alone writes head `head`'s rows of sequence bi.
                let o = dst.at(oo + r0 * os);
                let vb = (v[vo + c0 * vs..].as_ptr(), vs, 1);
                unsafe { mm((m, hd, n - c0), o, os, false, (s.as_ptr(), s_len, 1), vb, 1.0) }
            }
        },
    );
    Forward { out, rotated, lse }
}

/// The gradients of [`forward`]'s inputs from its output's `dout`, its output `out`, the
/// rotated Q and K (split heads) and the log-sum-exps it saved, `v` and the tables.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dout: &[f32],
    out: &[f32],
    [q, k]: [&[f32]; 2],
    lse: &[f32],
    v: &[f32],
    cos: &[f32],
    sin: &[f32],
    pos: &[u32],
    d: Dims,
) -> Grads {
    let (t, s_len, hd, rep) = (d.t, d.s(), d.hd, d.h / d.kv);
    let scale = 1.0 / (hd as f32).sqrt();
    // Per (sequence, KV head): dQ of its query heads ([rep, t, hd], rotated), dK (rotated), dV.
    let per: Vec<[Vec<f32>; 3]> = (0..d.b * d.kv)
        .into_par_iter()
        .map_init(
            || (vec![0f32; BR * s_len], vec![0f32; BR * s_len], vec![0f32; t]),
            |(s, dp, delta), bg| {
                let (bi, g) = (bg / d.kv, bg % d.kv);
                let kh = &k[bg * s_len * hd..][..s_len * hd];
                let (vo, vs) = d.kv_at(bi, g);
                let (mut dq, mut dk, mut dv) =
                    (vec![0f32; rep * t * hd], vec![0f32; s_len * hd], vec![0f32; s_len * hd]);
                for r in 0..rep {
                    let head = g * rep + r;
                    let bh = bi * d.h + head;
                    let qh = &q[bh * t * hd..][..t * hd];
                    let (oo, os) = d.q_at(bi, head);
                    for (i, dl) in delta.iter_mut().enumerate() {
                        let row = oo + i * os..oo + i * os + hd;
                        *dl = simd::sum_of(&dout[row.clone()], |j, g| g * out[row.start + j]);
                    }
                    for r0 in (0..t).step_by(BR) {
                        let m = (t - r0).min(BR);
                        let (c0, n) = d.block(pos, bi, r0, m);
                        let nc = n - c0;
                        let kb = &kh[c0 * hd..];
                        scores(s, qh, kb, r0, (m, nc), d, scale);
                        let d_o = (dout[oo + r0 * os..].as_ptr(), os, 1);
                        let vb = (v[vo + c0 * vs..].as_ptr(), 1, vs);
                        // SAFETY (all four products): the buffers hold the rows and strides named.
                        unsafe { mm((m, nc, hd), dp.as_mut_ptr(), s_len, false, d_o, vb, 1.0) };
                        for i in 0..m {
                            let live = d.live(pos, bi, r0 + i, c0);
                            let (si, di) = (&mut s[i * s_len..i * s_len + nc], &mut dp[i * s_len..i * s_len + nc]);
                            let (lse, dl) = (lse[bh * t + r0 + i], delta[r0 + i]);
                            grad_row(&mut si[live.clone()], &mut di[live.clone()], lse, dl);
                            for x in [si, di] {
                                x[..live.start].fill(0.0);
                                x[live.end..].fill(0.0);
                            }
                        }
                        let dq_rows = dq[(r * t + r0) * hd..].as_mut_ptr();
                        unsafe {
                            mm((m, hd, nc), dq_rows, hd, false, (dp.as_ptr(), s_len, 1), (kb.as_ptr(), hd, 1), scale);
                            mm(
                                (nc, hd, m),
                                dk[c0 * hd..].as_mut_ptr(),
                                hd,
                                true,
                                (dp.as_ptr(), 1, s_len),
                                (qh[r0 * hd..].as_ptr(), hd, 1),
                                scale,
                            );
                            mm((nc, hd, m), dv[c0 * hd..].as_mut_ptr(), hd, true, (s.as_ptr(), 1, s_len), d_o, 1.0);
                        }
                    }
                }
                [dq, dk, dv]
            },
        )
        .collect();
    // Back to the inputs' layout, undoing the rotation on dQ and dK in [`Layout::Rows`].
    let gather = |n: usize, rows: usize, which: usize| {
        let mut grad = vec![0f32; d.b * rows * n * hd];
        let src = |bi: usize, head: usize, ti: usize| -> &[f32] {
            // dQ's heads live with their KV head; dK and dV are one head per task.
            let (task, off) = match which {
                0 => (bi * d.kv + head / rep, ((head % rep) * t + ti) * hd),
                _ => (bi * d.kv + head, ti * hd),
            };
            &per[task][which][off..off + hd]
        };
        match d.layout {
            Layout::Rows => grad.par_chunks_mut(n * hd).enumerate().for_each(|(bt, row)| {
                let (bi, ti) = (bt / rows, bt % rows);
                let tab = d.tab(bi, ti);
                for head in 0..n {
                    let dst = &mut row[head * hd..(head + 1) * hd];
                    match which {
                        2 => dst.copy_from_slice(src(bi, head, ti)),
                        _ => unrope_row(src(bi, head, ti), &cos[tab.clone()], &sin[tab.clone()], dst),
                    }
                }
            }),
            Layout::Heads => grad.par_chunks_mut(hd).enumerate().for_each(|(i, dst)| {
                let (bn, ti) = (i / rows, i % rows);
                dst.copy_from_slice(src(bn / n, bn % n, ti));
            }),
        }
        grad
    };
    Grads { dq: gather(d.h, t, 0), dk: gather(d.kv, s_len, 1), dv: gather(d.kv, s_len, 2) }
}

/// The autodiff op over q, k, v (and, in [`Layout::Rows`], the tables, which get no
/// gradient): `N` is 5 there and 3 in [`Layout::Heads`].
#[derive(Debug)]
struct FusedAttention;

/// What the backward keeps: the rotated Q and K (computed, or the inputs), the log-sum-exps,
/// `v`, the output and the tables (none in [`Layout::Heads`]).
#[derive(Debug, Clone)]
struct Saved {
    qk: Qk,
    lse: Vec<f32>,
    v: FlexTensor,
    out: FlexTensor,
    tables: Option<[FlexTensor; 2]>,
    /// Each row's position in its document (with `dims.docs`).
    pos: std::sync::Arc<Vec<u32>>,
    dims: Dims,
}

/// The rotated Q and K the backward reads: those the forward computed from the projections,
/// or the split heads it was given (kept by handle, not copied).
#[derive(Debug, Clone)]
enum Qk {
    Rotated([Vec<f32>; 2]),
    Given([FlexTensor; 2]),
}

impl Qk {
    fn slices(&self) -> [&[f32]; 2] {
        match self {
            Qk::Rotated([q, k]) => [q, k],
            Qk::Given([q, k]) => [values(q), values(k)],
        }
    }
}

impl Dims {
    /// The shapes of q, k (and v) in this layout.
    fn shapes(&self) -> [Vec<usize>; 2] {
        let (b, t, s, hd) = (self.b, self.t, self.s(), self.hd);
        match self.layout {
            Layout::Rows => [vec![b, t, self.h * hd], vec![b, s, self.kv * hd]],
            Layout::Heads => [vec![b, self.h, t, hd], vec![b, self.kv, s, hd]],
        }
    }
}

impl<const N: usize> Backward<Flex, N> for FusedAttention {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (dout, parents) = upstream(grads, &ops);
        let st = ops.state;
        let d = st.dims;
        let (cos, sin) = match &st.tables {
            Some([c, s]) => (values(c), values(s)),
            None => (&[][..], &[][..]),
        };
        let g = backward(values(&dout), values(&st.out), st.qk.slices(), &st.lse, values(&st.v), cos, sin, &st.pos, d);
        let [qs, ks] = d.shapes();
        give(grads, parents[0], || flex(g.dq, &qs));
        give(grads, parents[1], || flex(g.dk, &ks));
        give(grads, parents[2], || flex(g.dv, &ks));
    }
}

/// Runs the op on gathered `args` (q, k, v, then the tables in [`Layout::Rows`]).
fn run<const N: usize, const D: usize>(args: Args, dims: Dims, pos: std::sync::Arc<Vec<u32>>) -> Tensor<D> {
    let rows = dims.layout == Layout::Rows;
    let (cos, sin) = match rows {
        true => (args.get(3), args.get(4)),
        false => (&[][..], &[][..]),
    };
    let f = forward(args.get(0), args.get(1), args.get(2), cos, sin, &pos, dims);
    let out = flex(f.out, &dims.shapes()[0]);
    let v = args.t[2].clone();
    let tables = rows.then(|| [args.t[3].clone(), args.t[4].clone()]);
    let qk = match f.rotated {
        Some(r) => Qk::Rotated(r),
        None => Qk::Given([args.t[0].clone(), args.t[1].clone()]),
    };
    let o = out.clone();
    args.finish::<_, N, D>(FusedAttention, out, move || Saved { qk, lse: f.lse, v, out: o, tables, pos, dims })
}

/// Causal attention with RoPE from the projections, each query seeing at most `window` keys
/// (itself included; `None`: all before it): `q` `[b, t, heads * hd]`, `k` and `v` `[b, t,
/// kv_heads * hd]`, `cos`/`sin` `[t, hd]` (positions `0..t`); the output is `[b, t, heads *
/// hd]`, ready for the output projection. With `docs` (each row's position in its packed
/// document, `[b * t]`), a row sees only its own document and the tables are `[b * t, hd]`,
/// one row per token. f32 Flex tensors, plain or under autodiff; anything else comes back
/// unchanged.
#[allow(clippy::too_many_arguments)]
pub fn rope_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    heads: usize,
    kv_heads: usize,
    window: Option<usize>,
    docs: Option<&std::sync::Arc<Vec<u32>>>,
) -> Result<Tensor<3>, [Tensor<3>; 3]> {
    let [b, t, qw] = q.dims();
    let rows = if docs.is_some() { b * t } else { t };
    let hd = qw / heads.max(1);
    let fits = heads > 0
        && kv_heads > 0
        && window != Some(0)
        && heads.is_multiple_of(kv_heads)
        && hd.is_multiple_of(2)
        && qw == heads * hd
        && k.dims() == [b, t, kv_heads * hd]
        && v.dims() == [b, t, kv_heads * hd]
        && docs.is_none_or(|p| p.len() == b * t && (0..b * t).all(|i| p[i] as usize <= i % t))
        && cos.dims() == [rows, hd]
        && sin.dims() == [rows, hd];
    let args = match fits {
        true => Args::default().push(&q).and_then(|a| a.push(&k)).and_then(|a| a.push(&v)),
        false => None,
    };
    let Some(args) = args.and_then(|a| a.push(cos)).and_then(|a| a.push(sin)) else {
        return Err([q, k, v]);
    };
    let w = window.unwrap_or(usize::MAX);
    let dims = Dims { b, t, h: heads, kv: kv_heads, hd, w, start: 0, layout: Layout::Rows, docs: docs.is_some() };
    Ok(run::<5, 3>(args, dims, docs.cloned().unwrap_or_default()))
}

/// Causal grouped-query attention of rotated split heads whose queries follow `start` cached
/// keys: `q` `[b, heads, t, hd]` at positions `start..start + t`, `k` and `v` `[b, kv_heads,
/// start + t, hd]`; query `i` sees keys `j <= start + i` (and, with a window `w`, `j > start +
/// i - w`), as [`crate::model::attention::grouped_attention`] defines. With `pos` (`[b * t]`,
/// each query's position in its own sequence: left-padded generation), query `i` of row `r`
/// sees keys from `start + i - pos[r * t + i]` on only. f32 Flex tensors, plain or under
/// autodiff; anything else comes back unchanged.
pub fn grouped(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    start: usize,
    window: Option<usize>,
    pos: Option<&std::sync::Arc<Vec<u32>>>,
) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let ([b, h, t, hd], [kb, kv, s, khd]) = (q.dims(), k.dims());
    let fits = h > 0
        && kv > 0
        && window != Some(0)
        && h.is_multiple_of(kv)
        && [kb, s, khd] == [b, start + t, hd]
        && v.dims() == k.dims()
        && pos.is_none_or(|p| p.len() == b * t && (0..b * t).all(|i| p[i] as usize <= start + i % t));
    let args = match fits {
        true => Args::default().push(&q).and_then(|a| a.push(&k)).and_then(|a| a.push(&v)),
        false => None,
    };
    let Some(args) = args else {
        return Err([q, k, v]);
    };
    let w = window.unwrap_or(usize::MAX);
    let dims = Dims { b, t, h, kv, hd, w, start, layout: Layout::Heads, docs: pos.is_some() };
    Ok(run::<3, 4>(args, dims, pos.cloned().unwrap_or_default()))
}
