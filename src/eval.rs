//! Held-out evaluation: mean next-token cross-entropy over real (non-padded) tokens, and its
//! exponential, the perplexity.

use burn::tensor::Device;

use crate::data::pack::Packed;
use crate::kd_loss::{KdConfig, kd_loss};
use crate::model::Decoder;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub ppl: f64,
    pub tokens: usize,
}

/// Evaluate on the first `max_batches` batches of `data` in order (all of it when `None`).
/// `model` should be on a plain (non-autodiff) device.
pub fn evaluate(
    model: &Decoder,
    data: &Packed,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
) -> EvalResult {
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let mut sum = 0.0;
    let mut tokens = 0;
    for (i, chunk) in rows.chunks(batch_size).enumerate() {
        if max_batches.is_some_and(|m| i >= m) {
            break;
        }
        let batch = data.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let logits = model.forward(batch.inputs).reshape([b * t, model.config.vocab_size]);
        let cfg = KdConfig {
            alpha: 1.0,
            temperature: 1.0,
            chunk_tokens: 4096,
            divergence: crate::kd_loss::Divergence::ForwardKl,
        };
        let out = kd_loss(logits, None, batch.targets, batch.mask, cfg);
        let mean: f32 = out.ce.into_scalar();
        sum += mean as f64 * batch.real_tokens as f64;
        tokens += batch.real_tokens;
    }
    let loss = sum / tokens.max(1) as f64;
    EvalResult { loss, ppl: loss.exp(), tokens }
}
