//! The KD loss's closed-form chunk (`kd_loss::closed_form_chunk`) as one pass per row: the
//! three softmaxes (student at 1 and at tau, teacher at tau), the CE and forward-KL terms and
//! the logit gradient, rows in parallel. burn's composition runs about twenty full-size
//! `[rows, vocab]` kernels per chunk, each allocating its output and reading the last one's;
//! here a row of the vocabulary stays in cache from its max to its gradient.

// simd_fn! compiles each body three times; the lint sees the copies too.
#![allow(clippy::too_many_arguments)]

use rayon::prelude::*;

use super::simd::{self, exp, simd_fn};

/// What one chunk gives back: the weighted CE and KL sums and `dL/ds`, `[rows, vocab]`.
pub struct ChunkGrad {
    pub ce: f64,
    pub kl: f64,
    pub grad: Vec<f32>,
}

/// The hyper-parameters of a chunk: `alpha` weighs CE against the divergence, `tau` is the
/// temperature; without a teacher the loss is CE alone (alpha taken as 1).
#[derive(Clone, Copy)]
pub struct Hyper {
    pub alpha: f32,
    pub tau: f32,
}

/// `s`, `t`: student and teacher logits `[rows, vocab]` (row-major); `tgt`: the label per row
/// (in range: checked by the caller); `w`: the weight per row (mask / the batch's weight).
pub fn closed_form(s: &[f32], t: Option<&[f32]>, tgt: &[usize], w: &[f32], vocab: usize, h: Hyper) -> ChunkGrad {
    let mut grad = vec![0f32; s.len()];
    let per_row: Vec<(f32, f32)> = grad
        .par_chunks_mut(vocab)
        .enumerate()
        .map_init(
            || (vec![0f32; vocab], vec![0f32; vocab]),
            |(es, et), (i, g)| {
                let r = i * vocab..(i + 1) * vocab;
                match t {
                    Some(t) => kd_row(&s[r.clone()], &t[r], tgt[i], w[i], h.alpha, h.tau, g, es, et),
                    None => (ce_row(&s[r], tgt[i], w[i], g), 0.0),
                }
            },
        )
        .collect();
    // Rows in order, in f64: the same sums whatever the threads did.
    let ce = per_row.iter().map(|r| r.0 as f64).sum();
    let kl = per_row.iter().map(|r| r.1 as f64).sum();
    ChunkGrad { ce, kl, grad }
}

simd_fn! {
    /// Hard labels only: `g = w (softmax(s) - onehot(y))`; returns `w * CE`.
    fn ce_row(s: &[f32], y: usize, w: f32, g: &mut [f32]) -> f32 {
        let m = simd::max(s);
        for (o, &x) in g.iter_mut().zip(s) {
            *o = exp(x - m);
        }
        let z = simd::sum_of(g, |_, e| e);
        let lse = m + z.ln();
        let scale = w / z;
        for o in g.iter_mut() {
            *o *= scale;
        }
        g[y] -= w;
        w * (lse - s[y])
    }
}

simd_fn! {
    /// One row of `alpha CE + (1 - alpha) tau^2 KL(p_t || p_s)` at temperature `tau`:
    /// `g = w [alpha (softmax(s) - onehot(y)) + (1 - alpha) tau (softmax(s/tau) - softmax(t/tau))]`;
    /// returns `(w CE, w KL)`. `es`, `et`: scratch rows.
    #[allow(clippy::too_many_arguments)]
    fn kd_row(s: &[f32], t: &[f32], y: usize, w: f32, alpha: f32, tau: f32, g: &mut [f32], es: &mut [f32], et: &mut [f32]) -> (f32, f32) {
        let inv = 1.0 / tau;
        let m = simd::max(s);
        // max(s / tau) = max(s) / tau for tau > 0 (the recipe's validation holds that).
        let (ms, mt) = (m * inv, simd::max(t) * inv);
        for (((o, a), b), (&x, &u)) in g.iter_mut().zip(es.iter_mut()).zip(et.iter_mut()).zip(s.iter().zip(t)) {
            *o = exp(x - m);
            *a = exp(x * inv - ms);
            *b = exp(u * inv - mt);
        }
        let z1 = simd::sum_of(g, |_, e| e);
        let zs = simd::sum_of(es, |_, e| e);
        let zt = simd::sum_of(et, |_, e| e);
        let (lse1, lse_s, lse_t) = (m + z1.ln(), ms + zs.ln(), mt + zt.ln());
        // KL = sum p_t (log p_t - log p_s), log p_t - log p_s = (t - s) / tau - (lse_t - lse_s).
        let shift = lse_t - lse_s;
        let kl = simd::sum_of(et, |j, e| e / zt * ((t[j] - s[j]) * inv - shift));
        let (a1, a2) = (w * alpha / z1, w * (1.0 - alpha) * tau);
        let (rs, rt) = (1.0 / zs, 1.0 / zt);
        for ((o, &a), &b) in g.iter_mut().zip(es.iter()).zip(et.iter()) {
            *o = a1 * *o + a2 * (a * rs - b * rt);
        }
        g[y] -= w * alpha;
        (w * (lse1 - s[y]), w * kl)
    }
}
