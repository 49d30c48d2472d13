//! The per-row negative log-likelihood: one definition for every scorer of rows (the
//! teacher-perplexity filter, the curriculum's teacher cross-entropy, self-paced learning's
//! student losses), so that they agree to the bit.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::Decoder;

/// Mean negative log-likelihood of each row's real tokens, with no autodiff graph.
/// `logits`: (b * t, vocab); `targets`, `mask`: (b * t,), mask 1 for a real target, 0 for
/// padding; returns b values (0 for a row without real tokens).
pub fn row_nll(logits: Tensor<2>, targets: Tensor<1, Int>, mask: Tensor<1>, b: usize, t: usize) -> Vec<f64> {
    let nll = log_softmax(logits.detach(), 1).gather(1, targets.unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1).neg()
        * mask.clone();
    let per = nll.reshape([b, t]).sum_dim(1) / mask.reshape([b, t]).sum_dim(1).clamp_min(1.0);
    per.into_data().convert::<f64>().try_to_vec::<f64>().expect("f64")
}

/// Perplexity of each document (its first `max_seq_len` tokens) under `teacher`. Each
/// document already ends with EOS (and starts with BOS where the tokenizer adds one).
pub fn doc_ppl(teacher: &Decoder, docs: &[Vec<u32>], eos: u32, device: &Device) -> Vec<f64> {
    let ctx = teacher.config.shape.max_seq_len;
    let v = teacher.config.vocab_size;
    let mut out = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(16) {
        // Right padding: a causal model's earlier positions never see it; its targets are masked.
        let len = chunk.iter().map(|d| d.len().min(ctx + 1)).max().unwrap_or(2).max(2);
        let (mut inp, mut tgt, mut msk) = (Vec::new(), Vec::new(), Vec::new());
        for d in chunk {
            let mut seq: Vec<u32> = d.iter().copied().take(ctx + 1).collect();
            let real = seq.len() - 1;
            seq.resize(len, eos);
            inp.extend(seq[..len - 1].iter().map(|&x| x as i64));
            tgt.extend(seq[1..].iter().map(|&x| x as i64));
            msk.extend((0..len - 1).map(|j| if j < real { 1f32 } else { 0.0 }));
        }
        let (b, t) = (chunk.len(), len - 1);
        let logits =
            teacher.forward(Tensor::<2, Int>::from_data(TensorData::new(inp, [b, t]), device)).reshape([b * t, v]);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(tgt, [b * t]), device);
        let mask = Tensor::<1>::from_data(TensorData::new(msk, [b * t]), device);
        out.extend(row_nll(logits, targets, mask, b, t).into_iter().map(f64::exp));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curriculum::token_scores_full;

    /// `row_nll` is each row's mean cross-entropy over its real tokens (the f64 host
    /// definition, to f32 rounding); masked positions do not count.
    #[test]
    fn row_nll_is_the_masked_mean_cross_entropy() {
        let dev = Device::flex();
        let (b, t, v) = (3, 4, 7);
        let z: Vec<f32> = (0..b * t * v).map(|i| ((i * 37 % 19) as f32 - 9.0) / 3.0).collect();
        let targets: Vec<i64> = (0..b * t).map(|i| (i * 5 % v) as i64).collect();
        let real = [4, 2, 0];
        let mask: Vec<f32> = (0..b * t).map(|i| if i % t < real[i / t] { 1.0 } else { 0.0 }).collect();
        let got = row_nll(
            Tensor::<2>::from_data(TensorData::new(z.clone(), [b * t, v]), &dev),
            Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [b * t]), &dev),
            Tensor::<1>::from_data(TensorData::new(mask, [b * t]), &dev),
            b,
            t,
        );
        for r in 0..b {
            let n = real[r];
            let want = (0..n)
                .map(|p| token_scores_full(&z[(r * t + p) * v..(r * t + p + 1) * v], targets[r * t + p] as usize).0)
                .sum::<f64>()
                / n.max(1) as f64;
            assert!((got[r] - want).abs() < 1e-5, "row {r}: {} vs {want}", got[r]);
        }
    }
}
