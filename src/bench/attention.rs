//! `distill bench-attention`: the training attention op's forward+backward throughput in
//! TFLOP/s, at the shapes FlashAttention's own benchmark uses (a fixed number of tokens per
//! batch, `d_model / head_dim` heads), so that it reads directly against PyTorch's
//! `scaled_dot_product_attention` run on the same machine (`scripts/attention_peer.py`, which
//! times both back to back).
//!
//! What is timed is what training runs: the model's attention seam on tracked tensors, then
//! the backward of `y * g` for a fixed random `g` (seeded with ones), until dQ, dK and dV are
//! computed. On
//! LibTorch that is [`crate::model::attention::grouped_attention`] (PyTorch's fused kernels);
//! on the CPU it is [`crate::kernels::cpu::rope_attention`], whose RoPE is given identity
//! tables here (its cost is included: a pass over Q and K). `reference` is burn's materialized
//! `softmax(Q K^T) V` on any backend.

use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};

use crate::error::{Error, Result};
use crate::model::attention::{grouped_attention, reference_attention};
use crate::model::config::AttentionImpl;

/// One benchmark point: `batch x seq` tokens, `heads` query heads of `head_dim` sharing
/// `kv_heads` key/value heads, causal, each query seeing at most `window` keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub head_dim: usize,
    pub window: Option<usize>,
}

impl AttnShape {
    /// Query-key pairs a causal (windowed) attention computes per (sequence, head): row `i`
    /// sees `min(i + 1, window)` keys.
    pub fn pairs(&self) -> f64 {
        let (t, w) = (self.seq as f64, self.window.unwrap_or(usize::MAX).min(self.seq) as f64);
        w * (w + 1.0) / 2.0 + (t - w) * w
    }

    /// Forward+backward FLOPs, FlashAttention's convention: `4 * head_dim` per pair forward
    /// (`Q K^T` and `P V`), 2.5 times that backward (`Q K^T` again, `dP`, `dV`, `dQ`, `dK`).
    pub fn flops(&self) -> f64 {
        3.5 * 4.0 * (self.batch * self.heads * self.head_dim) as f64 * self.pairs()
    }
}

/// Milliseconds per forward+backward, the mean of `reps` after `warm` unmeasured ones, on
/// `device` (`cpu`: burn's flex, where the fused op is ours) in `dtype`. The clock stops when
/// dQ of the last repetition has been read back, so an asynchronous device (a GPU) has
/// finished all of them.
pub fn time_attention(
    (device, cpu): (&Device, bool),
    dtype: DType,
    s: AttnShape,
    imp: AttentionImpl,
    warm: usize,
    reps: usize,
) -> Result<f64> {
    let AttnShape { batch: b, heads: h, kv_heads: kv, seq: t, head_dim: hd, window } = s;
    let dev = device.clone().autodiff();
    let randn = |shape: [usize; 4]| -> Tensor<4> {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device).cast(dtype).autodiff()
    };
    // The CPU kernel takes the projections' layout, `[b, t, heads * hd]`, as training gives
    // it: its inputs are made `[b, t, heads, hd]`, whose merge of the last two is free, so
    // that no layout change is timed. The others take split heads, `[b, heads, t, hd]`.
    let rows = cpu && imp.is_fused();
    let shape = |n: usize| if rows { [b, t, n, hd] } else { [b, n, t, hd] };
    let (q, k, v) = (randn(shape(h)), randn(shape(kv)), randn(shape(kv)));
    let g = randn(shape(h));
    let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
    // RoPE by identity tables.
    let tables = (Tensor::<2>::ones([t, hd], &dev), Tensor::<2>::zeros([t, hd], &dev));
    let merged = |x: &Tensor<4>| x.clone().reshape([b, t, x.dims()[2] * hd]);
    let run = || -> Result<Tensor<4>> {
        let y = match (imp, cpu) {
            (AttentionImpl::Fused, true) => {
                let (cos, sin) = &tables;
                let y = crate::kernels::cpu::rope_attention(
                    merged(&q),
                    merged(&k),
                    merged(&v),
                    cos,
                    sin,
                    h,
                    kv,
                    window,
                    None,
                )
                .map_err(|_| Error::input(format!("no fused CPU attention for {dtype:?}")))?;
                y.reshape([b, t, h, hd])
            }
            (AttentionImpl::Fused, false) => grouped_attention(q.clone(), k.clone(), v.clone(), 0, window),
            (AttentionImpl::Reference, _) => reference_attention(q.clone(), k.clone(), v.clone(), 0, window),
        };
        // Backward from y * g itself (burn seeds it with ones): the same kernels as PyTorch's
        // `grad(y * g, grad_outputs=ones)` in the peer. A `.sum()` here would add two passes
        // over the output (burn materializes the sum's gradient), which PyTorch's expand skips.
        let grads = (y * g.clone()).backward();
        let grad = |x: &Tensor<4>| x.grad(&grads).ok_or_else(|| Error::runtime("attention: an input got no gradient"));
        let (dq, _, _) = (grad(&q)?, grad(&k)?, grad(&v)?);
        Ok(dq)
    };
    // One element of the last dQ, read back: waits for everything queued before it.
    let finish = |dq: Tensor<4>| -> Result<()> {
        let x: f32 = dq.slice([0..1, 0..1, 0..1, 0..1]).cast(DType::F32).into_scalar();
        match x.is_finite() {
            true => Ok(()),
            false => Err(Error::runtime(format!("attention at {t} tokens: non-finite gradient"))),
        }
    };
    let mut last = None;
    for _ in 0..warm.max(1) {
        last = Some(run()?);
    }
    finish(last.take().expect("one warm-up"))?;
    let t0 = Instant::now();
    for _ in 0..reps.max(1) {
        last = Some(run()?);
    }
    finish(last.take().expect("one repetition"))?;
    Ok(t0.elapsed().as_secs_f64() * 1e3 / reps.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair count against a direct count of the visible (row, key) pairs.
    #[test]
    fn pairs_count_the_visible_keys() {
        for (t, w) in [(7, None), (7, Some(3)), (9, Some(1)), (5, Some(9)), (64, Some(16))] {
            let s = AttnShape { batch: 1, heads: 1, kv_heads: 1, seq: t, head_dim: 8, window: w };
            let w = w.unwrap_or(usize::MAX);
            let direct = (0..t).flat_map(|i| (0..=i).filter(move |&j| i - j < w)).count();
            assert_eq!(s.pairs(), direct as f64, "t {t} w {w}");
        }
        let s = AttnShape { batch: 2, heads: 3, kv_heads: 1, seq: 4, head_dim: 8, window: None };
        // 10 pairs, 4 * 8 FLOPs each forward, x 3.5 with the backward, 6 (sequence, head)s.
        assert_eq!(s.flops(), 3.5 * 4.0 * 8.0 * 10.0 * 6.0);
    }

    /// The fused CPU op is refused, with its reason, for what it cannot take (the sweep then
    /// says so rather than timing another kernel).
    #[test]
    fn cpu_fused_refuses_half_precision() {
        let dev = Device::flex();
        let s = AttnShape { batch: 1, heads: 2, kv_heads: 1, seq: 33, head_dim: 8, window: Some(5) };
        let err = time_attention((&dev, true), DType::BF16, s, AttentionImpl::Fused, 1, 1).unwrap_err();
        assert!(err.to_string().contains("no fused CPU attention for BF16"), "{err}");
    }
}
