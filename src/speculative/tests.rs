//! Speculative decoding against its references: the teacher's own greedy output, the
//! teacher's exact distribution (chi-square), and a drafter equal to the teacher.

use super::*;
use crate::generate::{generate_batch, row_rng};
use crate::model::{DecoderConfig, MambaShape};
use crate::recipe::PartialShape;

fn model(vocab: usize, pattern: &str, seed: u64, dev: &Device) -> Decoder {
    let shape = PartialShape {
        d_model: Some(16),
        n_layers: Some(pattern.len()),
        n_heads: Some(4),
        n_kv_heads: Some(2),
        d_ff: Some(32),
        layer_pattern: Some(pattern.into()),
        mamba: Some(MambaShape { d_state: 4, head_dim: 8, chunk_size: 4, ..Default::default() }),
        ..Default::default()
    };
    DecoderConfig { vocab_size: vocab, shape: shape.to_shape().unwrap() }.init(seed, dev)
}

fn sampling(temperature: f64, max_tokens: usize) -> Sampling {
    Sampling { temperature, top_k: 0, top_p: 1.0, seed: 0, max_tokens }
}

/// Greedy speculative output is the teacher's greedy output token for token, with drafts
/// rejected along the way (a student of other weights), for attention and hybrid Mamba-2
/// models (cut caches and restored ones), draft lengths 1 to 5, and a stop id.
#[test]
fn greedy_speculation_is_the_teachers_greedy_output() {
    let dev = Device::flex();
    let mut rejected = 0;
    for (tp, sp) in [("AA", "A"), ("AMA", "MA"), ("A", "AM")] {
        let (teacher, student) = (model(40, tp, 1, &dev), model(40, sp, 2, &dev));
        let prompts: Vec<Vec<u32>> = vec![vec![3, 7, 1], vec![5], vec![9, 9, 2, 30, 4, 11]];
        for stops in [vec![], vec![17u32]] {
            let s = sampling(0.0, 20);
            let rngs = (0..prompts.len()).map(|i| row_rng(0, i as u64)).collect();
            let (want, _) = generate_batch(&teacher, &prompts, rngs, &stops, &s, &dev);
            for k in 1..=5 {
                for (p, w) in prompts.iter().zip(&want) {
                    let (got, st) = speculate(&teacher, &student, p, &stops, &s, k, &mut SplitMix(5), &dev);
                    assert_eq!(&got, w, "{tp}/{sp} k {k} prompt {p:?}");
                    assert!(st.accepted <= st.drafted && st.tokens >= got.tokens.len());
                    rejected += st.drafted - st.accepted;
                }
            }
        }
    }
    assert!(rejected > 50, "the student's drafts must be rejected often enough to test it ({rejected})");
}

/// A student identical to the teacher has every draft accepted (p / q = 1), and each round
/// then produces k + 1 tokens.
#[test]
fn an_identical_drafter_is_always_accepted() {
    let dev = Device::flex();
    for pattern in ["AA", "AMA"] {
        let teacher = model(40, pattern, 3, &dev);
        for temperature in [0.0, 1.0, 1.7] {
            let s = sampling(temperature, 24);
            let (g, st) = speculate(&teacher, &teacher.clone(), &[4, 2], &[], &s, 3, &mut SplitMix(9), &dev);
            assert_eq!(g.tokens.len(), 24);
            assert_eq!(st.accepted, st.drafted, "{pattern} T {temperature}");
            assert_eq!(st.teacher_calls, 6, "4 tokens a call: {st:?}");
        }
    }
}

/// Sampled speculative output is distributed as the teacher's own sampling: the first two
/// tokens' joint frequencies over a vocabulary of 6, against the teacher's exact distribution
/// (its softmaxes at temperature 1, and at 1.5 with top-k and top-p), by a chi-square test with a
/// fixed seed. The student is another model, so rejections and the residual draw happen.
#[test]
fn sampled_speculation_follows_the_teachers_distribution() {
    let dev = Device::flex();
    let v = 6;
    let (teacher, student) = (model(v, "A", 21, &dev), model(v, "A", 22, &dev));
    let prompt = [1u32, 4];
    let last_row = |ids: &[u32]| -> Vec<f32> {
        let t = ids.len();
        let z = teacher.forward(crate::model::token_tensor(ids, &dev)).slice([0..1, t - 1..t]).reshape([v]);
        z.into_data().try_to_vec::<f32>().unwrap()
    };
    for s in [
        Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, max_tokens: 2 },
        Sampling { temperature: 1.5, top_k: 4, top_p: 0.9, seed: 0, max_tokens: 2 },
    ] {
        // The teacher's exact joint distribution of (x1, x2).
        let p1 = distribution(&last_row(&prompt), &s);
        let mut want = vec![0.0f64; v * v];
        for &(a, pa) in &p1 {
            for (b, pb) in distribution(&last_row(&[prompt[0], prompt[1], a]), &s) {
                want[a as usize * v + b as usize] += pa * pb;
            }
        }
        let n = 8000;
        let mut counts = vec![0usize; v * v];
        let mut st = SpecStats::default();
        let mut rng = SplitMix(77);
        for _ in 0..n {
            let (g, one) = speculate(&teacher, &student, &prompt, &[], &s, 2, &mut rng, &dev);
            counts[g.tokens[0] as usize * v + g.tokens[1] as usize] += 1;
            st += one;
        }
        assert!(st.accepted < st.drafted && st.accepted > 0, "both outcomes happen: {st:?}");
        // Cells expected fewer than 5 times are pooled into one, as the test requires.
        let (mut chi2, mut cells, mut pooled_e, mut pooled_o) = (0.0, 0, 0.0, 0.0);
        for (c, &p) in counts.iter().zip(&want) {
            let e = p * n as f64;
            if e < 5.0 {
                assert!(p > 0.0 || *c == 0, "a pair the teacher never draws was drawn");
                (pooled_e, pooled_o) = (pooled_e + e, pooled_o + *c as f64);
            } else {
                chi2 += (*c as f64 - e).powi(2) / e;
                cells += 1;
            }
        }
        if pooled_e > 0.0 {
            chi2 += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-9);
            cells += 1;
        }
        // The 0.999 quantile of chi-square with `cells - 1` degrees of freedom, by
        // Wilson-Hilferty (within 1% at these degrees).
        let df = (cells - 1) as f64;
        let crit = df * (1.0 - 2.0 / (9.0 * df) + 3.09 * (2.0 / (9.0 * df)).sqrt()).powi(3);
        println!("{s:?}: chi-square {chi2:.1} over {cells} cells (critical {crit:.1}), {st:?}");
        assert!(cells > 8, "enough cells to test: {cells}");
        assert!(chi2 < crit, "{s:?}: chi-square {chi2:.1} over {cells} cells, critical {crit:.1}");
    }
}
