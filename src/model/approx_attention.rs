//! Linear-time stand-ins for softmax attention, for students (seed 004): Linformer (`L`) and
//! Performer (`P`) layers. Each replaces only the scoring and mixing of an [`Attention`]
//! layer: its projections, RoPE, GQA and KV cache stay the layer's own, so a cached decode
//! and a training pass compute the same function.
//!
//! [`Attention`]: super::attention::Attention

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData};

use super::config::{LinformerShape, PerformerShape};
use super::init::Init;
use crate::rng::SplitMix;

#[derive(Module, Debug)]
pub enum Approx {
    Linformer(Linformer),
    Performer(Performer),
}

/// Causal Linformer: a query sees its own chunk exactly (up to itself) and each earlier chunk
/// through `rows` learned mixtures of its keys (`E`) and values (`F`).
///
/// Why this causal form: Linformer's projection mixes the whole sequence, so a query would
/// see later tokens. Mixing whole chunks only, and letting a query read the mixtures of the
/// chunks before its own, keeps every mixture in the past; its own chunk it reads exactly,
/// as it must for the most recent tokens. With `rows = chunk` and `E = F = I` it is exactly
/// causal softmax attention (tested).
#[derive(Module, Debug)]
pub struct Linformer {
    /// `E`: `[rows, chunk]`.
    pub proj_k: Param<Tensor<2>>,
    /// `F`: `[rows, chunk]`.
    pub proj_v: Param<Tensor<2>>,
    pub chunk: usize,
}

/// FAVOR+ (Choromanski et al. 2021): `exp(q.k / sqrt(d)) ~ phi(q).phi(k)` with
/// `phi(x) = exp(W x - |x|^2 / 2)` over positive orthogonal random features `W`, causal by
/// prefix sums of `phi(k) v^T`.
#[derive(Module, Debug)]
pub struct Performer {
    /// `W`: `[features, head_dim]`, never trained (frozen in `train::freeze`), saved with the
    /// weights; redrawn every `redraw` steps by [`redraw`].
    pub omega: Param<Tensor<2>>,
    pub redraw: usize,
    pub chunk: usize,
    /// The block index: with the run's seed and the step, what a redraw draws from.
    pub layer: usize,
}

impl Linformer {
    /// Both projections start as mean pooling over `rows` equal runs of the chunk.
    pub fn new(s: &LinformerShape, init: &mut Init) -> Self {
        let pool: Vec<f32> = (0..s.rows)
            .flat_map(|r| {
                let (a, b) = (r * s.chunk / s.rows, (r + 1) * s.chunk / s.rows);
                (0..s.chunk).map(move |j| if (a..b).contains(&j) { 1.0 / (b - a) as f32 } else { 0.0 })
            })
            .collect();
        let p = || Param::from_tensor(Tensor::from_data(TensorData::new(pool.clone(), [s.rows, s.chunk]), init.device));
        Linformer { proj_k: p(), proj_v: p(), chunk: s.chunk }
    }
}

impl Performer {
    pub fn new(s: &PerformerShape, head_dim: usize, layer: usize, init: &mut Init) -> Self {
        let w = orthogonal_features(&mut SplitMix(init.seed()), s.features, head_dim);
        let omega = Tensor::from_data(TensorData::new(w, [s.features, head_dim]), init.device);
        Performer { omega: Param::from_tensor(omega), redraw: s.redraw, chunk: s.chunk, layer }
    }
}

impl Approx {
    /// `q`: `[b, h, t, d]`, queries of positions `start..start + t`; `k`, `v`: `[b, h, start +
    /// t, d]` (KV heads already repeated). Returns `[b, h, t, d]`.
    pub fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, start: usize) -> Tensor<4> {
        match self {
            Approx::Linformer(l) => {
                let (e, f) = (l.proj_k.val(), l.proj_v.val());
                if start == 0 { linformer_chunked(q, k, v, e, f) } else { linformer_general(q, k, v, e, f, start) }
            }
            Approx::Performer(p) => {
                let (fq, fk) = features(q, k, p.omega.val());
                if start == 0 { linear_chunked(fq, fk, v, p.chunk) } else { linear_general(fq, fk, v, start) }
            }
        }
    }
}

/// `n` positive orthogonal random features of dimension `d`: blocks of `d` orthonormal rows
/// (Gram-Schmidt of Gaussian rows), each row scaled to the norm of an independent Gaussian
/// `d`-vector, so that every row is marginally N(0, I) while rows within a block are
/// orthogonal (lower variance than i.i.d. rows).
pub fn orthogonal_features(rng: &mut SplitMix, n: usize, d: usize) -> Vec<f32> {
    let mut gauss = || {
        let u1 = rng.uniform().max(1e-300);
        let u2 = rng.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let mut out = Vec::with_capacity(n * d);
    while out.len() < n * d {
        let mut block: Vec<Vec<f64>> = Vec::with_capacity(d);
        while block.len() < d {
            let mut r: Vec<f64> = (0..d).map(|_| gauss()).collect();
            for b in &block {
                let dot: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
                r.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
            let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-6 {
                block.push(r.into_iter().map(|x| x / norm).collect());
            }
        }
        for row in block {
            let len = (0..d).map(|_| gauss().powi(2)).sum::<f64>().sqrt();
            out.extend(row.iter().map(|x| (x * len) as f32));
        }
    }
    out.truncate(n * d);
    out
}

/// `phi(q)`, `phi(k)`: `[b, h, t, m]`, for `exp(q.k / sqrt(d))`. Each is divided by a
/// constant that cancels in the ratio of [`linear_chunked`] (the largest exponent of each
/// query row; of all keys of a head), so that no exp overflows.
fn features(q: Tensor<4>, k: Tensor<4>, omega: Tensor<2>) -> (Tensor<4>, Tensor<4>) {
    let [b, h, _, d] = q.dims();
    let m = omega.dims()[0];
    let scale = (d as f64).powf(-0.25);
    let w = omega.transpose().unsqueeze::<4>().expand([b, h, d, m]);
    let phi = |x: Tensor<4>| {
        let x = x.mul_scalar(scale);
        let sq = (x.clone() * x.clone()).sum_dim(3).mul_scalar(0.5);
        x.matmul(w.clone()) - sq
    };
    let (eq, ek) = (phi(q), phi(k));
    let q_max = eq.clone().detach().max_dim(3);
    let [_, _, tk, _] = ek.dims();
    let k_max = ek.clone().detach().reshape([b, h, tk * m]).max_dim(2).reshape([b, h, 1, 1]);
    ((eq - q_max).exp(), (ek - k_max).exp())
}

/// Causal linear attention `sum_{j<=i} (fq_i.fk_j) v_j / sum_{j<=i} fq_i.fk_j` over chunks of
/// `c`: within a chunk the `[c, c]` products, masked; across chunks the prefix sums of
/// `fk^T v` (`[m, d]` per chunk). Memory `t * (c + m)` per head, not `t * t`.
fn linear_chunked(fq: Tensor<4>, fk: Tensor<4>, v: Tensor<4>, c: usize) -> Tensor<4> {
    let [b, h, t, m] = fq.dims();
    let d = v.dims()[3];
    let c = c.min(t);
    let n = t.div_ceil(c);
    let pad = |x: Tensor<4>| pad_seq(x, n * c);
    let (fq, fk, v) =
        (pad(fq).reshape([b, h, n, c, m]), pad(fk).reshape([b, h, n, c, m]), pad(v).reshape([b, h, n, c, d]));
    let device = fq.device();
    let later = Tensor::<2, Bool>::tril_mask([c, c], 0, &device).reshape([1, 1, 1, c, c]).expand([b, h, n, c, c]);
    let local = fq.clone().matmul(fk.clone().swap_dims(3, 4)).mask_fill(later, 0.0);
    // Each chunk's sums, then those of the chunks before it (inclusive prefix minus itself).
    let kv = fk.clone().swap_dims(3, 4).matmul(v.clone());
    let kv_before = kv.clone().cumsum(2) - kv;
    let z = fk.sum_dim(3);
    let z_before = (z.clone().cumsum(2) - z).swap_dims(3, 4);
    let num = local.clone().matmul(v) + fq.clone().matmul(kv_before);
    let den = local.sum_dim(4) + fq.matmul(z_before);
    (num / den).reshape([b, h, n * c, d]).slice([0..b, 0..h, 0..t, 0..d])
}

/// The same function for queries after `start` cached keys (decoding), spelled out as the
/// masked `[t, start + t]` products: linear in the keys per new token.
fn linear_general(fq: Tensor<4>, fk: Tensor<4>, v: Tensor<4>, start: usize) -> Tensor<4> {
    let [b, h, t, _] = fq.dims();
    let s = fk.dims()[2];
    let later =
        Tensor::<2, Bool>::tril_mask([t, s], start as i64, &fq.device()).reshape([1, 1, t, s]).expand([b, h, t, s]);
    let a = fq.matmul(fk.swap_dims(2, 3)).mask_fill(later, 0.0);
    a.clone().matmul(v) / a.sum_dim(3)
}

/// `x` (`[b, h, t, d]`) with zero rows after its `t` up to `len`.
fn pad_seq(x: Tensor<4>, len: usize) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    if len == t {
        return x;
    }
    let device = x.device();
    Tensor::cat(vec![x, Tensor::zeros([b, h, len - t, d], &device)], 2)
}

/// Linformer in training (no cached keys): chunks of `c` (`E`: `[r, c]`), one softmax over
/// each query's `n * r` chunk mixtures (those of later or its own chunk hidden) and its own
/// chunk's `c` keys (later ones hidden).
fn linformer_chunked(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, e: Tensor<2>, f: Tensor<2>) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let [r, c] = e.dims();
    let n = t.div_ceil(c);
    let chunks = |x: Tensor<4>| pad_seq(x, n * c).reshape([b, h, n, c, d]);
    let (q, k, v) = (chunks(q), chunks(k), chunks(v));
    let mix =
        |p: Tensor<2>, x: Tensor<5>| p.unsqueeze::<5>().expand([b, h, n, r, c]).matmul(x).reshape([b, h, n * r, d]);
    let (km, vm) = (mix(e, k.clone()), mix(f, v.clone()));
    let scale = 1.0 / (d as f64).sqrt();
    let device = q.device();
    // Query chunk i reads mixture row j * r + x when j < i.
    let hide_mem = memory_mask(n, r, &device).reshape([1, 1, n, 1, n * r]).expand([b, h, n, c, n * r]);
    let s_mem = q.clone().reshape([b, h, n * c, d]).matmul(km.swap_dims(2, 3)).reshape([b, h, n, c, n * r]);
    let s_mem = s_mem.mul_scalar(scale).mask_fill(hide_mem, f32::NEG_INFINITY);
    let later = Tensor::<2, Bool>::tril_mask([c, c], 0, &device).reshape([1, 1, 1, c, c]).expand([b, h, n, c, c]);
    let s_loc = q.matmul(k.swap_dims(3, 4)).mul_scalar(scale).mask_fill(later, f32::NEG_INFINITY);
    let p = softmax(Tensor::cat(vec![s_mem, s_loc], 4), 4);
    let p_mem = p.clone().slice([0..b, 0..h, 0..n, 0..c, 0..n * r]);
    let p_loc = p.slice([0..b, 0..h, 0..n, 0..c, n * r..n * r + c]);
    let y_mem = p_mem.reshape([b, h, n * c, n * r]).matmul(vm);
    let y = y_mem + p_loc.matmul(v).reshape([b, h, n * c, d]);
    y.slice([0..b, 0..h, 0..t, 0..d])
}

/// `[n, n * r]`: true where query chunk `i` must not read mixture row `j * r + x` (j >= i).
fn memory_mask(n: usize, r: usize, device: &burn::tensor::Device) -> Tensor<2, Bool> {
    let v: Vec<bool> = (0..n).flat_map(|i| (0..n * r).map(move |col| col / r >= i)).collect();
    Tensor::from_data(TensorData::new(v, [n, n * r]), device)
}

/// Linformer for queries after `start` cached keys: the mixtures of the complete chunks
/// before each query's own, and its own chunk's keys up to itself, spelled out.
fn linformer_general(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, e: Tensor<2>, f: Tensor<2>, start: usize) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let s = k.dims()[2];
    let [r, c] = e.dims();
    let full = s / c;
    let device = q.device();
    let scale = 1.0 / (d as f64).sqrt();
    let mut scores = Vec::new();
    let mut values = Vec::new();
    let mut hide: Vec<bool> = Vec::new();
    if full > 0 {
        let cut = |x: Tensor<4>| x.slice([0..b, 0..h, 0..full * c, 0..d]).reshape([b, h, full, c, d]);
        let mix = |p: Tensor<2>, x: Tensor<5>| {
            p.unsqueeze::<5>().expand([b, h, full, r, c]).matmul(x).reshape([b, h, full * r, d])
        };
        let (km, vm) = (mix(e, cut(k.clone())), mix(f, cut(v.clone())));
        scores.push(q.clone().matmul(km.swap_dims(2, 3)));
        values.push(vm);
        hide.extend((0..t).flat_map(|i| (0..full * r).map(move |col| col / r >= (start + i) / c)).collect::<Vec<_>>());
    }
    scores.push(q.matmul(k.clone().swap_dims(2, 3)));
    values.push(v);
    let cols = scores.iter().map(|x| x.dims()[3]).sum::<usize>();
    let mem_cols = cols - s;
    let mut mask = Vec::with_capacity(t * cols);
    for i in 0..t {
        let p = start + i;
        mask.extend_from_slice(&hide[i * mem_cols..(i + 1) * mem_cols]);
        mask.extend((0..s).map(|j| j > p || j / c != p / c));
    }
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [t, cols]), &device)
        .reshape([1, 1, t, cols])
        .expand([b, h, t, cols]);
    let p = softmax(Tensor::cat(scores, 3).mul_scalar(scale).mask_fill(mask, f32::NEG_INFINITY), 3);
    p.matmul(Tensor::cat(values, 2))
}

/// The Performer layers' features redrawn for `step` where their interval says so (a
/// function of the run's seed, the layer and `step / redraw`): called by the trainer before
/// each step, so a resumed run redraws exactly where the uninterrupted one did.
pub fn redraw(mut model: super::Decoder, seed: u64, step: usize) -> super::Decoder {
    for block in &mut model.blocks {
        let Some(Approx::Performer(p)) = block.approx_mut() else { continue };
        if p.redraw == 0 || step == 0 || !step.is_multiple_of(p.redraw) {
            continue;
        }
        let epoch = (step / p.redraw) as u64;
        let mut rng = SplitMix(seed ^ (p.layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.rotate_left(32));
        let [m, d] = p.omega.dims();
        let w = orthogonal_features(&mut rng, m, d);
        p.omega = p
            .omega
            .clone()
            .map(|t| {
                let fresh = Tensor::<2>::from_data(TensorData::new(w, [m, d]), &t.device()).cast(t.dtype());
                if t.is_autodiff() { fresh.autodiff() } else { fresh }
            })
            .set_require_grad(false);
    }
    model
}

#[cfg(test)]
#[path = "approx_attention_tests.rs"]
mod tests;
