//! Sampling from a trained model: greedy, temperature, top-k and top-p, seeded; stops at EOS
//! or after `max_tokens`. Each step recomputes the whole prefix (a KV cache is planned with
//! the student-architecture work; at our context lengths this costs milliseconds).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::pack::SplitMix;
use crate::model::Decoder;

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: usize,
}

/// Pick the next token from `logits` (one row over the vocabulary).
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut SplitMix) -> u32 {
    let argmax = || logits.iter().enumerate().fold(0, |b, (i, v)| if *v > logits[b] { i } else { b }) as u32;
    if s.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let m = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx.iter().map(|&i| ((logits[i] as f64 - m) / s.temperature).exp()).collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if s.top_p < 1.0 {
        let mut cum = 0.0;
        let keep = probs.iter().take_while(|p| { let before = cum; cum += **p; before < s.top_p }).count().max(1);
        probs.truncate(keep);
        idx.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
    }
    let mut u = rng.uniform();
    for (p, i) in probs.iter().zip(&idx) {
        if u < *p {
            return *i as u32;
        }
        u -= p;
    }
    *idx.last().expect("non-empty") as u32
}

/// Generate continuation ids of `prompt`; `on_token` sees each new id as it is produced.
pub fn generate(model: &Decoder, prompt: &[u32], eos: u32, s: &Sampling, device: &Device, mut on_token: impl FnMut(u32)) -> Vec<u32> {
    let mut rng = SplitMix(s.seed);
    let mut ids: Vec<u32> = prompt.to_vec();
    if ids.is_empty() {
        ids.push(eos);
    }
    let ctx = model.config.shape.max_seq_len;
    let mut out = Vec::new();
    for _ in 0..s.max_tokens {
        let window = &ids[ids.len().saturating_sub(ctx)..];
        let t = window.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(window.iter().map(|v| *v as i64).collect::<Vec<_>>(), [1, t]), device);
        let logits = model.forward(x).slice([0..1, t - 1..t]).reshape([model.config.vocab_size]);
        let row: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
        let next = sample(&row, s, &mut rng);
        if next == eos {
            break;
        }
        ids.push(next);
        out.push(next);
        on_token(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_greedy_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 1.0, 2.9, -1.0];
        let base = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 1, max_tokens: 1 };
        let mut rng = SplitMix(3);
        assert_eq!(sample(&logits, &base, &mut rng), 1);
        let k2 = Sampling { temperature: 1.0, top_k: 2, ..base };
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[sample(&logits, &k2, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[0] + counts[2] + counts[4], 0, "only the top 2 may be drawn");
        // p(1) / p(3) = e^{0.1} ~ 1.105 among the two kept.
        let ratio = counts[1] as f64 / counts[3] as f64;
        assert!((ratio - 0.1f64.exp()).abs() < 0.15, "ratio {ratio}");
        // top_p = 0.3: the first token alone holds more than 0.3 of the mass.
        let p = Sampling { temperature: 1.0, top_p: 0.3, ..base };
        assert!((0..200).all(|_| sample(&logits, &p, &mut rng) == 1));
    }
}
