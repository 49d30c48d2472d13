//! Generation against references: the model's distribution, full recomputation, and one
//! prompt at a time.

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

/// The distribution `sample` should draw from, spelled out independently: softmax of
/// `logits / t` in f64, the `k` largest kept, then the most likely tokens until their mass
/// reaches `p` (the crossing one kept), renormalized.
fn naive_distribution(logits: &[f32], t: f64, k: usize, p: f64) -> Vec<f64> {
    let e: Vec<f64> = logits.iter().map(|&v| (v as f64 / t).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| e[*b].partial_cmp(&e[*a]).unwrap());
    let kept_k = if k == 0 { order.len() } else { k };
    let mut kept = Vec::new();
    let zk: f64 = order[..kept_k].iter().map(|&i| e[i] / z).sum();
    let mut mass = 0.0;
    for &i in &order[..kept_k] {
        if mass >= p {
            break;
        }
        kept.push(i);
        mass += e[i] / z / zk;
    }
    let zk2: f64 = kept.iter().map(|&i| e[i]).sum();
    let mut out = vec![0.0; logits.len()];
    for &i in &kept {
        out[i] = e[i] / zk2;
    }
    out
}

/// Pearson's chi-square of `counts` against `probs` over the tokens with nonzero probability,
/// and whether any token of probability zero was drawn.
fn chi_square(counts: &[usize], probs: &[f64]) -> (f64, bool) {
    let n: usize = counts.iter().sum();
    let stray = counts.iter().zip(probs).any(|(c, p)| *p == 0.0 && *c > 0);
    let x2 = counts
        .iter()
        .zip(probs)
        .filter(|(_, p)| **p > 0.0)
        .map(|(c, p)| {
            let e = p * n as f64;
            (*c as f64 - e).powi(2) / e
        })
        .sum();
    (x2, stray)
}

/// Sampling is distributed as the model says: 40,000 seeded draws from a vocabulary of 8 under
/// each setting, Pearson's chi-square against the naive distribution below the 0.1% critical
/// value of its degrees of freedom (fails when the temperature is dropped, top-k or top-p is
/// ignored, or the crossing token is cut).
#[test]
fn sampling_follows_the_model_distribution_chi_square() {
    let logits = [1.2f32, -0.3, 2.0, 0.4, 2.0, -1.5, 0.9, 1.7];
    // Critical values of chi-square at p = 0.001 for 1..=7 degrees of freedom.
    let critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32];
    for (t, k, p) in [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.7, 0, 1.0), (1.0, 5, 1.0), (0.8, 0, 0.7), (1.3, 6, 0.85)] {
        let s = Sampling { temperature: t, top_k: k, top_p: p, seed: 0, max_tokens: 1 };
        let want = naive_distribution(&logits, t, k, p);
        let mut rng = row_rng(2026, (t * 100.0) as u64 + k as u64);
        let mut counts = [0usize; 8];
        for _ in 0..40_000 {
            counts[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        let (x2, stray) = chi_square(&counts, &want);
        let df = want.iter().filter(|p| **p > 0.0).count() - 1;
        assert!(!stray, "t={t} k={k} p={p}: drew a token outside the kept set: {counts:?} vs {want:?}");
        assert!(x2 < critical[df - 1], "t={t} k={k} p={p}: chi-square {x2:.1} with {df} df; {counts:?} vs {want:?}");
    }
}

fn tiny(pattern: &str, window: Option<usize>, seed: u64) -> Decoder {
    let mut shape = crate::recipe::PartialShape {
        d_model: Some(16),
        n_layers: Some(pattern.len()),
        n_heads: Some(4),
        n_kv_heads: Some(2),
        d_ff: Some(32),
        max_seq_len: Some(40),
        layer_pattern: Some(pattern.into()),
        mamba: Some(crate::model::MambaShape { d_state: 4, head_dim: 8, chunk_size: 4, ..Default::default() }),
        ..Default::default()
    }
    .to_shape()
    .unwrap();
    shape.window = window;
    crate::model::DecoderConfig { vocab_size: 24, shape }.init(seed, &Device::flex())
}

/// A batch of unequal prompts generates, row for row, what each prompt generates alone
/// through [`generate`] (no padding, its own cache), greedy and seeded: attention, sliding
/// window, Mamba-2 and hybrid models, both kernels. Rows stop on their own stop id, limit or
/// context (the 40-token context cuts the long prompt's row). Fails when pads are visible to
/// real tokens, when positions count the pads, or when a pad feeds a Mamba state.
#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let dev = Device::flex();
    let prompts: Vec<Vec<u32>> = vec![
        vec![3, 7, 1],
        vec![5],
        vec![2, 9, 4, 4, 8, 1, 3, 11, 6],
        vec![],
        (0..33).map(|i| (i * 5 % 23) as u32).collect(),
    ];
    let stop = 23;
    for (pattern, window) in [("AA", None), ("AA", Some(4)), ("MAM", None), ("M", None)] {
        for fused in [true, false] {
            let mut m = tiny(pattern, window, 5);
            if !fused {
                m.config.shape.attention_impl = crate::model::config::AttentionImpl::Reference;
                m = m.config.clone().init(5, &dev);
            }
            for temperature in [0.0, 1.0] {
                let s = Sampling { temperature, top_k: 0, top_p: 1.0, seed: 77, max_tokens: 12 };
                let rngs = (0..prompts.len() as u64).map(|i| row_rng(s.seed, i)).collect();
                let (got, _) = generate_batch(&m, &prompts, rngs, &[stop], &s, &dev);
                for (i, p) in prompts.iter().enumerate() {
                    let alone = Sampling { seed: row_rng(s.seed, i as u64).0, ..s };
                    let want = generate(&m, p, stop, &alone, &dev, |_| {});
                    let tag = format!("{pattern} window {window:?} fused {fused} t {temperature} row {i}");
                    assert_eq!(got[i].tokens, want, "{tag}");
                    assert_eq!(got[i].ended_by, (got[i].stop == Stop::Eos).then_some(stop), "{tag}");
                }
                assert_eq!(got[4].stop, Stop::Context, "the 33-token prompt fills the 40-token context");
                assert!(got.iter().any(|g| g.tokens.len() > 1), "something is generated");
            }
        }
    }
}

/// The device's draw picks the tokens the host's `sample` picks from the same uniforms (the
/// same ranking and inverse CDF), under every setting; fails when a cut, the temperature or
/// the uniform's use differ.
#[test]
fn device_draws_equal_host_draws_from_the_same_uniforms() {
    let dev = Device::flex();
    let (b, v) = (64, 50);
    let mut rng = crate::rng::SplitMix(8);
    // Distinct values: the order of tied tokens is the device sort's to choose.
    let logits: Vec<f32> = (0..b * v).map(|i| (rng.uniform() * 6.0 - 3.0) as f32 + i as f32 * 1e-5).collect();
    for (t, k, p) in [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 7, 1.0), (0.8, 0, 0.6), (1.3, 20, 0.9), (0.0, 0, 1.0)] {
        let s = Sampling { temperature: t, top_k: k, top_p: p, seed: 0, max_tokens: 1 };
        let rngs: Vec<_> = (0..b as u64).map(|r| row_rng(31, r)).collect();
        let u: Vec<f64> = rngs.iter().map(|r| crate::rng::SplitMix(r.0).uniform()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(logits.clone(), [b, v]), &dev);
        let got = sample::sample_on_device(x, &u, &s);
        let want: Vec<u32> = logits.chunks(v).zip(rngs).map(|(row, mut r)| sample(row, &s, &mut r)).collect();
        assert_eq!(got, want, "t={t} k={k} p={p}");
        assert!(want.iter().collect::<std::collections::HashSet<_>>().len() > 1, "draws that vary");
    }
}

/// The device's draw is distributed as the model says (chi-square as for `sample`, ties
/// included): 40,000 draws, 4,000 rows of the same logits at a time.
#[test]
fn device_draws_follow_the_model_distribution_chi_square() {
    let dev = Device::flex();
    let logits = [1.2f32, -0.3, 2.0, 0.4, 2.0, -1.5, 0.9, 1.7];
    let critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32];
    let rows = 4000;
    for (t, k, p) in [(1.0, 0, 1.0), (1.7, 0, 1.0), (1.0, 5, 1.0), (0.8, 0, 0.7), (1.3, 6, 0.85)] {
        let s = Sampling { temperature: t, top_k: k, top_p: p, seed: 0, max_tokens: 1 };
        let want = naive_distribution(&logits, t, k, p);
        let mut rng = row_rng(77, (t * 100.0) as u64 + k as u64);
        let mut counts = [0usize; 8];
        for _ in 0..10 {
            let x: Vec<f32> = (0..rows).flat_map(|_| logits).collect();
            let u: Vec<f64> = (0..rows).map(|_| rng.uniform()).collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [rows, 8]), &dev);
            for id in sample::sample_on_device(x, &u, &s) {
                counts[id as usize] += 1;
            }
        }
        let (x2, stray) = chi_square(&counts, &want);
        let df = want.iter().filter(|p| **p > 0.0).count() - 1;
        assert!(!stray, "t={t} k={k} p={p}: drew a token outside the kept set: {counts:?} vs {want:?}");
        assert!(x2 < critical[df - 1], "t={t} k={k} p={p}: chi-square {x2:.1} with {df} df; {counts:?} vs {want:?}");
    }
}
