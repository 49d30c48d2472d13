use super::*;
use burn::tensor::{Device, Distribution};

fn data<const D: usize>(x: &Tensor<D>) -> Vec<f32> {
    x.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// Causal softmax attention in f64 loops, `[b, h, t, d]` row-major, heads not grouped.
fn naive_softmax(q: &[f32], k: &[f32], v: &[f32], bh: usize, t: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; bh * t * d];
    let scale = 1.0 / (d as f64).sqrt();
    for g in 0..bh {
        for i in 0..t {
            let qi = &q[(g * t + i) * d..][..d];
            let s: Vec<f64> = (0..=i)
                .map(|j| {
                    qi.iter().zip(&k[(g * t + j) * d..][..d]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for (j, sj) in s.iter().enumerate() {
                let p = (sj - m).exp() / z;
                for c in 0..d {
                    out[(g * t + i) * d + c] += (p * v[(g * t + j) * d + c] as f64) as f32;
                }
            }
        }
    }
    out
}

fn qkv(b: usize, h: usize, t: usize, d: usize, std: f64, dev: &Device) -> [Tensor<4>; 3] {
    let r = || Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, std), dev);
    [r(), r(), r()]
}

fn eye(n: usize, dev: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(v, [n, n]), dev)
}

/// With as many rows as the chunk and identity projections, each earlier chunk is read
/// whole: causal Linformer is then exactly causal softmax attention (several chunks, a
/// ragged last one), in training and when decoding after cached keys.
#[test]
fn linformer_with_identity_projections_is_full_attention() {
    let dev = Device::flex();
    let (b, h, t, d, c) = (2, 3, 11, 8, 4);
    let [q, k, v] = qkv(b, h, t, d, 1.0, &dev);
    let want = naive_softmax(&data(&q), &data(&k), &data(&v), b * h, t, d);
    let got = linformer_chunked(q.clone(), k.clone(), v.clone(), eye(c, &dev), eye(c, &dev));
    assert!(max_diff(&data(&got), &want) < 1e-5, "{}", max_diff(&data(&got), &want));
    // The last 5 queries after 6 cached keys.
    let tail = linformer_general(q.slice([0..b, 0..h, 6..t, 0..d]), k, v, eye(c, &dev), eye(c, &dev), 6);
    let want_tail: Vec<f32> = (0..b * h).flat_map(|g| want[(g * t + 6) * d..(g * t + t) * d].to_vec()).collect();
    assert!(max_diff(&data(&tail), &want_tail) < 1e-5);
}

/// With learned (random) projections of fewer rows: the chunked training form and the
/// spelled-out decoding form agree, and no output depends on a later token.
#[test]
fn linformer_chunked_and_decoding_forms_agree_and_are_causal() {
    let dev = Device::flex();
    let (b, h, t, d, c, r) = (1, 2, 13, 8, 4, 2);
    let [q, k, v] = qkv(b, h, t, d, 1.0, &dev);
    let e = Tensor::<2>::random([r, c], Distribution::Normal(0.0, 0.5), &dev);
    let f = Tensor::<2>::random([r, c], Distribution::Normal(0.0, 0.5), &dev);
    let train = data(&linformer_chunked(q.clone(), k.clone(), v.clone(), e.clone(), f.clone()));
    for start in [0, 5, 8, 12] {
        let tail = linformer_general(
            q.clone().slice([0..b, 0..h, start..t, 0..d]),
            k.clone(),
            v.clone(),
            e.clone(),
            f.clone(),
            start,
        );
        let want: Vec<f32> = (0..b * h).flat_map(|g| train[(g * t + start) * d..(g * t + t) * d].to_vec()).collect();
        assert!(max_diff(&data(&tail), &want) < 1e-5, "start {start}");
    }
    // Changing token 9's key and value changes nothing before it.
    let bump = |x: Tensor<4>| {
        let mut v = data(&x);
        for g in 0..b * h {
            for c in 0..d {
                v[(g * t + 9) * d + c] += 3.0;
            }
        }
        Tensor::<4>::from_data(TensorData::new(v, [b, h, t, d]), &dev)
    };
    let moved = data(&linformer_chunked(q, bump(k), bump(v), e, f));
    for g in 0..b * h {
        let (a, z) = ((g * t) * d, (g * t + 9) * d);
        assert_eq!(train[a..z], moved[a..z], "a query before token 9 saw it");
        assert_ne!(train[z..z + d], moved[z..z + d]);
    }
}

/// Performer's chunked prefix sums and the spelled-out masked form (decoding) are one
/// function, for any chunk.
#[test]
fn performer_chunked_and_decoding_forms_agree() {
    let dev = Device::flex();
    let (b, h, t, d, m) = (1, 2, 10, 8, 16);
    let [q, k, v] = qkv(b, h, t, d, 0.5, &dev);
    let w = Tensor::<2>::from_data(TensorData::new(orthogonal_features(&mut SplitMix(3), m, d), [m, d]), &dev);
    let (fq, fk) = features(q.clone(), k.clone(), w.clone());
    let whole = data(&linear_general(fq.clone(), fk.clone(), v.clone(), 0));
    for c in [1, 3, 4, 10, 64] {
        let got = data(&linear_chunked(fq.clone(), fk.clone(), v.clone(), c));
        assert!(max_diff(&got, &whole) < 1e-5, "chunk {c}: {}", max_diff(&got, &whole));
    }
    let (fq_tail, fk_all) = features(q.slice([0..b, 0..h, 6..t, 0..d]), k, w);
    let tail = data(&linear_general(fq_tail, fk_all, v, 6));
    let want: Vec<f32> = (0..b * h).flat_map(|g| whole[(g * t + 6) * d..(g * t + t) * d].to_vec()).collect();
    assert!(max_diff(&tail, &want) < 1e-5);
}

/// FAVOR+ estimates softmax attention: the error against exact causal softmax attention
/// shrinks as the features grow (16, 64, 256, 1,024; averaged over draws), ending small.
#[test]
fn performer_converges_to_softmax_attention() {
    let dev = Device::flex();
    let (b, h, t, d) = (1, 2, 12, 8);
    let [q, k, v] = qkv(b, h, t, d, 0.6, &dev);
    let want = naive_softmax(&data(&q), &data(&k), &data(&v), b * h, t, d);
    let err_at = |m: usize| {
        let draws = 6;
        (0..draws)
            .map(|s| {
                let w =
                    Tensor::<2>::from_data(TensorData::new(orthogonal_features(&mut SplitMix(s), m, d), [m, d]), &dev);
                let (fq, fk) = features(q.clone(), k.clone(), w);
                let got = data(&linear_chunked(fq, fk, v.clone(), 4));
                got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / want.len() as f64
            })
            .sum::<f64>()
            .sqrt()
            / draws as f64
    };
    let errs: Vec<f64> = [16, 64, 256, 1024].iter().map(|&m| err_at(m)).collect();
    for w in errs.windows(2) {
        assert!(w[1] < w[0], "error did not shrink with more features: {errs:?}");
    }
    assert!(errs[3] < 0.02 && errs[0] > 2.0 * errs[3], "{errs:?}");
}

/// The features of a block are orthogonal, each row of Gaussian length (mean squared norm d).
#[test]
fn random_features_are_orthogonal_in_blocks() {
    let (m, d) = (64, 8);
    let w = orthogonal_features(&mut SplitMix(11), m, d);
    for blk in 0..m / d {
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (&w[(blk * d + i) * d..][..d], &w[(blk * d + j) * d..][..d]);
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(dot.abs() < 1e-4 * na * nb, "rows {i}, {j} of block {blk}: {dot}");
            }
        }
    }
    let mean_sq = w.chunks(d).map(|r| r.iter().map(|x| (x * x) as f64).sum::<f64>()).sum::<f64>() / m as f64;
    assert!((mean_sq - d as f64).abs() < 0.3 * d as f64, "{mean_sq}");
}

/// A redraw happens at multiples of the interval only, is a function of (seed, layer, step /
/// redraw), and leaves other layers alone.
#[test]
fn features_are_redrawn_on_schedule_and_reproducibly() {
    use crate::model::{DecoderConfig, ModelShape};
    let dev = Device::flex();
    let mut shape = ModelShape::for_tests(16, 3, 2, 1, 32);
    shape.layer_pattern = "PAP".into();
    shape.performer = PerformerShape { features: 8, redraw: 4, chunk: 4 };
    let c = DecoderConfig { vocab_size: 20, shape };
    let omegas = |m: &crate::model::Decoder| -> Vec<Vec<f32>> {
        m.blocks
            .iter()
            .filter_map(|b| match &b.mixer {
                crate::model::decoder::Mixer::Attention(a) => match &a.approx {
                    Some(Approx::Performer(p)) => Some(data(&p.omega.val())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let start = omegas(&c.init(1, &dev));
    assert_eq!(start.len(), 2);
    assert_eq!(omegas(&redraw(c.init(1, &dev), 9, 3)), start, "step 3 is not a multiple of 4");
    let a = omegas(&redraw(c.init(1, &dev), 9, 8));
    assert_ne!(a[0], start[0]);
    assert_ne!(a[0], a[1], "two layers drew the same features");
    assert_eq!(a, omegas(&redraw(c.init(1, &dev), 9, 8)));
    assert_ne!(a, omegas(&redraw(c.init(1, &dev), 9, 4)));
    assert_eq!(omegas(&redraw(c.init(1, &dev), 9, 9)), start);
}

/// The random features are never trained: on the training device they take no gradient
/// while the projections around them do.
#[test]
fn performer_features_are_frozen_in_training() {
    use crate::model::{DecoderConfig, ModelShape};
    let dev = Device::flex().autodiff();
    let mut shape = ModelShape::for_tests(16, 1, 2, 1, 32);
    shape.layer_pattern = "P".into();
    let c = DecoderConfig { vocab_size: 20, shape };
    let m = crate::train::freeze::trainable(c.init(1, &Device::flex()), &Default::default(), &dev);
    let ids = Tensor::<2, burn::tensor::Int>::from_data(TensorData::new((0..8i64).collect::<Vec<_>>(), [1, 8]), &dev);
    let grads = m.forward(ids).sum().backward();
    let crate::model::decoder::Mixer::Attention(a) = &m.blocks[0].mixer else { unreachable!() };
    let Some(Approx::Performer(p)) = &a.approx else { unreachable!() };
    assert!(p.omega.grad(&grads).is_none(), "omega took a gradient");
    assert!(a.wq.weight.grad(&grads).is_some());
}
