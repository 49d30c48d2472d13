//! Sampling from a trained model: greedy, temperature, top-k and top-p, seeded; stops at EOS,
//! after `max_tokens`, or at the model's context length.

use burn::tensor::Device;

use crate::model::Decoder;
use crate::rng::SplitMix;

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
        let keep = probs
            .iter()
            .take_while(|p| {
                let before = cum;
                cum += **p;
                before < s.top_p
            })
            .count()
            .max(1);
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
/// The prompt is run once, then each new token alone against the KV cache (attention) and
/// the carried state (Mamba-2).
pub fn generate(
    model: &Decoder,
    prompt: &[u32],
    eos: u32,
    s: &Sampling,
    device: &Device,
    mut on_token: impl FnMut(u32),
) -> Vec<u32> {
    let mut rng = SplitMix(s.seed);
    let mut next_input: Vec<u32> = if prompt.is_empty() { vec![eos] } else { prompt.to_vec() };
    let ctx = model.config.shape.max_seq_len;
    // Keep the prompt's tail that fits the context.
    if next_input.len() > ctx {
        next_input.drain(..next_input.len() - ctx);
    }
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    for _ in 0..s.max_tokens {
        if cache.pos + next_input.len() > ctx {
            break;
        }
        let t = next_input.len();
        let logits = model
            .forward_cached(crate::model::token_tensor(&next_input, device), &mut cache)
            .slice([0..1, t - 1..t])
            .reshape([model.config.vocab_size]);
        let row: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
        let next = sample(&row, s, &mut rng);
        if next == eos {
            break;
        }
        out.push(next);
        on_token(next);
        next_input = vec![next];
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

    /// Greedy generation through the cache picks, at every step, the argmax of a full
    /// forward pass over everything so far.
    #[test]
    fn cached_generation_matches_full_recompute() {
        let dev = Device::flex();
        let cfg = crate::model::DecoderConfig {
            vocab_size: 40,
            shape: crate::recipe::PartialShape {
                d_model: Some(16),
                n_layers: Some(3),
                n_heads: Some(4),
                n_kv_heads: Some(2),
                d_ff: Some(32),
                layer_pattern: Some("AMA".into()),
                mamba: Some(crate::model::MambaShape { d_state: 4, head_dim: 8, chunk_size: 4, ..Default::default() }),
                ..Default::default()
            }
            .to_shape()
            .unwrap(),
        };
        let m = cfg.init(11, &dev);
        let s = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, max_tokens: 12 };
        let prompt = [3u32, 7, 1];
        let got = generate(&m, &prompt, 39, &s, &dev, |_| {});
        let mut ids: Vec<u32> = prompt.to_vec();
        let mut want = Vec::new();
        for _ in 0..12 {
            let t = ids.len();
            let row: Vec<f32> = m
                .forward(crate::model::token_tensor(&ids, &dev))
                .slice([0..1, t - 1..t])
                .reshape([40])
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let next = sample(&row, &s, &mut SplitMix(0));
            if next == 39 {
                break;
            }
            want.push(next);
            ids.push(next);
        }
        assert_eq!(got, want);
        assert!(!got.is_empty());
    }
}
