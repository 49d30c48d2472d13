//! Picking the next token from one row of logits: greedy, temperature, top-k and top-p, from a
//! seeded generator. Each row of a batch has its own generator, so a row's tokens do not depend
//! on which other rows share its batch.

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Tensor, TensorData};

use crate::rng::SplitMix;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1 means no limit.
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: usize,
}

impl Sampling {
    pub fn greedy(max_tokens: usize) -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, max_tokens }
    }
}

/// The generator of row `index` of a job seeded with `seed`: a row's draws depend on its own
/// index only, whatever batch it is generated in.
pub fn row_rng(seed: u64, index: u64) -> SplitMix {
    let mut mix = SplitMix(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix(mix.next_u64())
}

fn argmax(logits: &[f32]) -> u32 {
    logits.iter().enumerate().fold(0, |b, (i, v)| if *v > logits[b] { i } else { b }) as u32
}

/// Pick the next token from `logits` (one row over the vocabulary). The distribution is the
/// softmax of `logits / temperature`, cut to the `top_k` most likely tokens, then to the
/// smallest most-likely set holding `top_p` of the mass (the token that crosses `top_p` kept,
/// as transformers does), renormalized. Ties rank the lower id first.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut SplitMix) -> u32 {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / s.temperature;
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let weight = |v: f32| ((v as f64 - m) * inv_t).exp();
    if s.top_k == 0 && s.top_p >= 1.0 {
        // The whole vocabulary: one pass for the mass, one to draw. No sort.
        let z: f64 = logits.iter().map(|&v| weight(v)).sum();
        let mut u = rng.uniform() * z;
        for (i, &v) in logits.iter().enumerate() {
            let w = weight(v);
            if u < w {
                return i as u32;
            }
            u -= w;
        }
        return argmax(logits);
    }
    let rank = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    // The candidates, and the mass of the set top-p cuts from: the whole vocabulary's, or the
    // top k's.
    let (mut cand, z): (Vec<(usize, f64)>, f64) = match s.top_k {
        0 => {
            // top-p alone keeps a prefix of the ranking; tokens below a weight `c` whose
            // heavier set already holds `top_p` of the mass can never be in it, so only the
            // heavier set is sorted (typically a few hundred tokens, not the vocabulary).
            let all: Vec<f64> = logits.iter().map(|&v| weight(v)).collect();
            let z: f64 = all.iter().sum();
            let mut c = 1.0 / 16.0;
            while c > 0.0 && all.iter().filter(|&&w| w >= c).sum::<f64>() < s.top_p * z {
                c /= 16.0;
            }
            (all.iter().enumerate().filter(|(_, w)| **w >= c).map(|(i, w)| (i, *w)).collect(), z)
        }
        k => {
            let mut all: Vec<(usize, f64)> = logits.iter().map(|&v| weight(v)).enumerate().collect();
            if k < all.len() {
                all.select_nth_unstable_by(k - 1, rank);
                all.truncate(k);
            }
            let z = all.iter().map(|c| c.1).sum();
            (all, z)
        }
    };
    cand.sort_unstable_by(rank);
    top_p_prefix(&mut cand, s.top_p, z);
    let z: f64 = cand.iter().map(|c| c.1).sum();
    let mut u = rng.uniform() * z;
    for &(i, w) in &cand {
        if u < w {
            return i as u32;
        }
        u -= w;
    }
    cand.last().expect("non-empty").0 as u32
}

/// Cut `ranked` (weights, most likely first) to its shortest prefix holding `top_p` of the mass
/// `z`, the token that crosses it kept (as transformers does); at least one token.
fn top_p_prefix<T>(ranked: &mut Vec<(T, f64)>, top_p: f64, z: f64) {
    if top_p >= 1.0 {
        return;
    }
    let (mut cum, mut keep) = (0.0, 0);
    while keep < ranked.len() && cum < top_p * z {
        cum += ranked[keep].1;
        keep += 1;
    }
    ranked.truncate(keep.max(1));
}

/// The distribution [`sample`] draws from, as `(id, probability)` pairs, most likely first
/// (ties: the lower id first), summing to 1: greedy is the argmax alone; otherwise the softmax
/// of `logits / temperature`, cut to the top k, then to the top-p prefix of that set's mass (the
/// crossing token kept), renormalized. Speculative decoding's acceptance rule reads it.
pub fn distribution(logits: &[f32], s: &Sampling) -> Vec<(u32, f64)> {
    if s.temperature <= 0.0 {
        return vec![(argmax(logits), 1.0)];
    }
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let mut all: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i as u32, ((v as f64 - m) / s.temperature).exp())).collect();
    all.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if s.top_k > 0 {
        all.truncate(s.top_k);
    }
    let z: f64 = all.iter().map(|c| c.1).sum();
    top_p_prefix(&mut all, s.top_p, z);
    let z: f64 = all.iter().map(|c| c.1).sum();
    all.iter_mut().for_each(|c| c.1 /= z);
    all
}

/// A draw from `dist` (pairs as [`distribution`] makes them) with the uniform `u` in [0, 1).
pub fn draw(dist: &[(u32, f64)], u: f64) -> u32 {
    let mut u = u * dist.iter().map(|c| c.1).sum::<f64>();
    for &(id, p) in dist {
        if u < p {
            return id;
        }
        u -= p;
    }
    dist.last().expect("a non-empty distribution").0
}

/// [`sample`] for a batch of rows of `logits` `[b, vocab]` on their device, each row drawn
/// with its uniform in `u` (one per row, as `sample` takes one from the row's generator): the
/// same inverse-CDF draw over the same ranking, so with the same uniforms both pick the same
/// tokens up to float rounding at an interval's edge (and the order of tied tokens, which the
/// device's sort leaves open). Only `b` ids cross to the host, not `b x vocab` logits: on a GPU
/// the host's draw cost as much as the decode step itself (BENCHMARKS.md, generation).
/// Probabilities in f32, their running sums in f64. Greedy (temperature 0) is the argmax.
pub fn sample_on_device(logits: Tensor<2>, u: &[f64], s: &Sampling) -> Vec<u32> {
    let [b, v] = logits.dims();
    assert_eq!(u.len(), b, "one uniform per row");
    let ids = match s.temperature <= 0.0 {
        true => logits.argmax(1),
        false => {
            let dev = logits.device();
            let p = softmax(logits.cast(DType::F32) / s.temperature, 1);
            let ranked = (s.top_k > 0 && s.top_k < v) || s.top_p < 1.0;
            let (w, order) = match ranked {
                true => {
                    let (w, order) = match s.top_k {
                        k if k > 0 && k < v => p.topk_with_indices(k, 1),
                        _ => p.sort_descending_with_indices(1),
                    };
                    (w.cast(DType::F64), Some(order))
                }
                false => (p.cast(DType::F64), None),
            };
            let n = w.dims()[1];
            let w = match s.top_p < 1.0 {
                // Keep a token while the mass ranked before it is below top_p of the kept set's
                // (the crossing token kept, as `sample`).
                true => {
                    let c = w.clone().cumsum(1);
                    let z = c.clone().slice([0..b, n - 1..n]).expand([b, n]);
                    let before = c - w.clone();
                    w.mask_fill(before.greater_equal(z * s.top_p), 0.0)
                }
                false => w,
            };
            let c = w.cumsum(1);
            let z = c.clone().slice([0..b, n - 1..n]);
            let u = Tensor::<2>::from_data(TensorData::new(u.to_vec(), [b, 1]), (&dev, DType::F64));
            // The first token whose running sum passes u z: the count of those that do not.
            let at = c.lower_equal((u * z).expand([b, n])).int().sum_dim(1).clamp_max(n as i64 - 1);
            match order {
                Some(order) => order.gather(1, at),
                None => at,
            }
        }
    };
    let ids = ids.reshape([b]).into_data().convert::<i64>();
    ids.try_into_vec::<i64>().expect("i64 ids").into_iter().map(|i| i as u32).collect()
}
