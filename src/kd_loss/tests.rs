use super::*;
use burn::tensor::{Device, TensorData};

fn t2(v: Vec<f32>, rows: usize, dev: &Device) -> Tensor<2> {
    let cols = v.len() / rows;
    Tensor::from_data(TensorData::new(v, [rows, cols]), dev)
}
fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}
fn cfg(alpha: f64, temperature: f64) -> KdConfig {
    KdConfig { alpha, temperature, chunk_tokens: 2, divergence: Divergence::ForwardKl }
}
/// Reference softmax in f64.
fn softmax(z: &[f64], tau: f64) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| ((x - m) / tau).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

type Reference = Box<dyn Fn(&[f64], &[f64]) -> f64>;

/// Each divergence and its f64 definition D(p_teacher, p_student).
fn reference_divergences() -> Vec<(Divergence, Reference)> {
    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).filter(|(a, _)| **a > 0.0).map(|(a, b)| a * (a / b).ln()).sum::<f64>()
    }
    fn mix(p: &[f64], w: f64, q: &[f64]) -> Vec<f64> {
        p.iter().zip(q).map(|(a, b)| w * a + (1.0 - w) * b).collect()
    }
    vec![
        (Divergence::ForwardKl, Box::new(kl)),
        (Divergence::ReverseKl, Box::new(|p, q| kl(q, p))),
        (
            Divergence::Jsd { beta: 0.3 },
            Box::new(|p, q| {
                let m = mix(p, 0.3, q);
                0.3 * kl(p, &m) + 0.7 * kl(q, &m)
            }),
        ),
        (Divergence::Jsd { beta: 0.0 }, Box::new(kl)),
        (Divergence::Jsd { beta: 1.0 }, Box::new(|p, q| kl(q, p))),
        (Divergence::SkewForwardKl { lambda: 0.1 }, Box::new(|p, q| kl(p, &mix(p, 0.1, q)))),
        (Divergence::SkewForwardKl { lambda: 0.0 }, Box::new(kl)),
        (Divergence::SkewReverseKl { lambda: 0.1 }, Box::new(|p, q| kl(q, &mix(q, 0.1, p)))),
        (Divergence::Tv, Box::new(|p, q| 0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>())),
    ]
}

/// Top-k targets with k < vocabulary, against f64 references built from the dense logits:
/// `renormalize` is the divergence between teacher and student each renormalized over the
/// kept ids; `other` adds one category holding each side's remaining mass. Every divergence,
/// tau = 2, a padded row, chunks that split the rows.
#[test]
fn top_k_targets_match_restricted_dense_reference() {
    let (n, v, k, tau) = (4, 9, 3, 2.0);
    let mut rng = crate::rng::SplitMix(11);
    let mut r = |m: usize| -> Vec<f64> { (0..m).map(|_| rng.uniform() * 6.0 - 3.0).collect() };
    let (s, t) = (r(n * v), r(n * v));
    let mask = [1.0f64, 1.0, 0.0, 1.0];
    // The teacher's k largest logits per row (ids in ascending order, as the cache stores them).
    let ids: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let row = &t[i * v..(i + 1) * v];
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            let mut top = order[..k].to_vec();
            top.sort();
            top
        })
        .collect();
    let dev = Device::flex().autodiff();
    for renormalize in [true, false] {
        for (d, reference) in reference_divergences() {
            let (mut want, mut logp, mut tail) = (0.0, Vec::new(), Vec::new());
            for i in 0..n {
                let (pt, ps) = (softmax(&t[i * v..(i + 1) * v], tau), softmax(&s[i * v..(i + 1) * v], tau));
                let (kt, ks): (Vec<f64>, Vec<f64>) = ids[i].iter().map(|&j| (pt[j], ps[j])).unzip();
                let (mt, ms) = (kt.iter().sum::<f64>(), ks.iter().sum::<f64>());
                let (p, q) = if renormalize {
                    logp.extend(kt.iter().map(|x| (x / mt).ln() as f32));
                    (kt.iter().map(|x| x / mt).collect::<Vec<_>>(), ks.iter().map(|x| x / ms).collect::<Vec<_>>())
                } else {
                    logp.extend(kt.iter().map(|x| x.ln() as f32));
                    tail.push((1.0 - mt).ln() as f32);
                    ([kt.clone(), vec![1.0 - mt]].concat(), [ks.clone(), vec![1.0 - ms]].concat())
                };
                want += mask[i] * reference(&p, &q);
            }
            let want = tau * tau * want / mask.iter().sum::<f64>();
            let target = Target::TopK(TopK {
                ids: Tensor::from_data(
                    TensorData::new(ids.concat().iter().map(|&x| x as i64).collect::<Vec<_>>(), [n, k]),
                    &dev,
                ),
                logp: Tensor::from_data(TensorData::new(logp, [n, k]), &dev),
                tail: (!renormalize).then(|| Tensor::from_data(TensorData::new(tail, [n]), &dev)),
            });
            let c = KdConfig { alpha: 0.0, temperature: tau, chunk_tokens: 3, divergence: d };
            let out = kd_loss_to(
                t2(s.iter().map(|x| *x as f32).collect(), n, &dev),
                Some(target),
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; n], [n]), &dev),
                Tensor::from_data(TensorData::new(mask.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n]), &dev),
                c,
            );
            let got = scalar(out.total);
            assert!(
                (got - want).abs() < 2e-5 * want.abs().max(1.0),
                "{d:?} renormalize={renormalize}: {got} vs {want}"
            );
        }
    }
}

/// Weights whose sum lies in (0, 1), and a chunk holding one mostly padded row: the plain
/// and the streamed loss are both sum_i w_i L_i / sum_i w_i, L_i from single-token calls.
#[test]
fn fractional_weights_give_the_weighted_mean() {
    let dev = Device::flex().autodiff();
    let (n, v) = (7, 5);
    let mut rng = crate::rng::SplitMix(9);
    let mut r = |m: usize| -> Vec<f32> { (0..m).map(|_| (rng.uniform() * 4.0 - 2.0) as f32).collect() };
    let (sv, tv) = (r(n * v), r(n * v));
    let w = [0.1f32, 0.0, 0.0, 0.3, 0.2, 0.0, 0.05];
    let targets = || {
        Tensor::<1, Int>::from_data(
            TensorData::new((0..n as i64).map(|i| (2 * i) % v as i64).collect::<Vec<_>>(), [n]),
            &dev,
        )
    };
    let c = KdConfig { alpha: 0.4, temperature: 2.0, chunk_tokens: 3, divergence: Divergence::ForwardKl };
    let with_mask = |m: Vec<f32>, streamed: bool| {
        let (s, t, m) = (
            t2(sv.clone(), n, &dev),
            Some(Target::Full(t2(tv.clone(), n, &dev))),
            Tensor::from_data(TensorData::new(m, [n]), &dev),
        );
        scalar(if streamed {
            kd_loss_streamed(s, t, targets(), m, c).total
        } else {
            kd_loss_to(s, t, targets(), m, c).total
        })
    };
    let one = |i: usize| with_mask((0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect(), false);
    let want = (0..n).map(|i| w[i] as f64 * one(i)).sum::<f64>() / w.iter().map(|x| *x as f64).sum::<f64>();
    for streamed in [false, true] {
        let got = with_mask(w.to_vec(), streamed);
        assert!((got - want).abs() < 1e-5, "streamed={streamed}: {got} vs {want}");
    }
}

#[test]
fn kl_matches_closed_form() {
    let dev = Device::flex();
    // p_t = (1/2, 1/4, 1/4), p_s = uniform: KL = 1/2 ln(3/2) + 1/2 ln(3/4).
    let teacher = t2(vec![0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()], 1, &dev);
    let student = t2(vec![0.0, 0.0, 0.0], 1, &dev);
    let tg = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &dev);
    let mask = Tensor::<1>::ones([1], &dev);
    let out = kd_loss(student, Some(teacher), tg, mask, cfg(0.0, 1.0));
    let want = 0.5 * 1.5f64.ln() + 0.5 * 0.75f64.ln();
    assert!((scalar(out.kl) - want).abs() < 1e-6);
    assert!((scalar(out.total) - want).abs() < 1e-6);
    // CE of a uniform student is ln 3 whatever the label.
    assert!((scalar(out.ce) - 3f64.ln()).abs() < 1e-6);
}

#[test]
fn alpha_one_is_cross_entropy_and_tau_squared_scales_kl() {
    let dev = Device::flex();
    let s = [0.3, -1.2, 2.0, 0.1, 0.7, 0.0, -0.5, 1.5];
    let t = [1.0, 0.2, -0.3, 0.4, -1.0, 2.5, 0.0, 0.3];
    let labels = [2i64, 1];
    let tg = || Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [2]), &dev);
    let st = || t2(s.iter().map(|x| *x as f32).collect(), 2, &dev);
    let te = || t2(t.iter().map(|x| *x as f32).collect(), 2, &dev);
    let mask = || Tensor::<1>::ones([2], &dev);
    // Reference values from the definitions, in f64.
    let mut ce = 0.0;
    let mut kl2 = 0.0;
    for r in 0..2 {
        let ps = softmax(&s[r * 4..r * 4 + 4], 1.0);
        ce -= ps[labels[r] as usize].ln();
        let (pt2, ps2) = (softmax(&t[r * 4..r * 4 + 4], 2.0), softmax(&s[r * 4..r * 4 + 4], 2.0));
        kl2 += pt2.iter().zip(&ps2).map(|(a, b)| a * (a / b).ln()).sum::<f64>();
    }
    let (ce, kl2) = (ce / 2.0, kl2 / 2.0);
    let a1 = kd_loss(st(), Some(te()), tg(), mask(), cfg(1.0, 2.0));
    assert!((scalar(a1.total) - ce).abs() < 1e-5, "alpha = 1 must be plain CE");
    let a0 = kd_loss(st(), Some(te()), tg(), mask(), cfg(0.0, 2.0));
    assert!((scalar(a0.total) - 4.0 * kl2).abs() < 1e-5, "tau^2 = 4 times the tempered KL");
    let mix = kd_loss(st(), Some(te()), tg(), mask(), cfg(0.25, 2.0));
    assert!((scalar(mix.total) - (0.25 * ce + 0.75 * 4.0 * kl2)).abs() < 1e-5);
}

#[test]
fn padding_is_masked_and_chunking_is_invisible() {
    let dev = Device::flex();
    let s = vec![0.3f32, -1.2, 2.0, 0.1, 0.7, 0.0, 9.0, -9.0, 5.0];
    let t = vec![1.0f32, 0.2, -0.3, 0.4, -1.0, 2.5, -7.0, 8.0, 1.0];
    let tg = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1, 0], [3]), &dev);
    let mask = Tensor::<1>::from_data(TensorData::new(vec![1f32, 1.0, 0.0], [3]), &dev);
    let padded = kd_loss(t2(s.clone(), 3, &dev), Some(t2(t.clone(), 3, &dev)), tg, mask, cfg(0.5, 2.0));
    let tg2 = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1], [2]), &dev);
    let unpadded = kd_loss(
        t2(s[..6].to_vec(), 2, &dev),
        Some(t2(t[..6].to_vec(), 2, &dev)),
        tg2,
        Tensor::ones([2], &dev),
        KdConfig { chunk_tokens: 1000, ..cfg(0.5, 2.0) },
    );
    assert!((scalar(padded.total) - scalar(unpadded.total)).abs() < 1e-6);
}

/// d/ds [tau^2 KL(p_t(tau) || p_s(tau))] / N = tau (p_s(tau) - p_t(tau)) / N, and both agree
/// with central finite differences of the loss itself.
#[test]
fn gradient_matches_analytic_and_finite_differences() {
    let dev = Device::flex().autodiff();
    let tau = 2.0;
    let s = vec![0.3f32, -1.2, 2.0, 0.1, 0.7, 0.0, -0.5, 1.5];
    let t = vec![1.0f32, 0.2, -0.3, 0.4, -1.0, 2.5, 0.0, 0.3];
    let tg = || Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1], [2]), &dev);
    let loss_at = |sv: Vec<f32>| {
        let out = kd_loss(t2(sv, 2, &dev), Some(t2(t.clone(), 2, &dev)), tg(), Tensor::ones([2], &dev), cfg(0.0, tau));
        out.total.into_scalar::<f32>() as f64
    };
    let st = t2(s.clone(), 2, &dev).require_grad();
    let out = kd_loss(st.clone(), Some(t2(t.clone(), 2, &dev)), tg(), Tensor::ones([2], &dev), cfg(0.0, tau));
    let grads = out.total.backward();
    let g: Vec<f32> = st.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    for r in 0..2 {
        let sd: Vec<f64> = s[r * 4..r * 4 + 4].iter().map(|x| *x as f64).collect();
        let td: Vec<f64> = t[r * 4..r * 4 + 4].iter().map(|x| *x as f64).collect();
        let (ps, pt) = (softmax(&sd, tau), softmax(&td, tau));
        for j in 0..4 {
            let analytic = tau * (ps[j] - pt[j]) / 2.0;
            assert!((g[r * 4 + j] as f64 - analytic).abs() < 1e-5, "analytic gradient at ({r},{j})");
            let h = 1e-2f32;
            let (mut up, mut dn) = (s.clone(), s.clone());
            up[r * 4 + j] += h;
            dn[r * 4 + j] -= h;
            let fd = (loss_at(up) - loss_at(dn)) / (2.0 * h as f64);
            assert!(
                (g[r * 4 + j] as f64 - fd).abs() < 2e-3,
                "finite difference at ({r},{j}): {fd} vs {}",
                g[r * 4 + j]
            );
        }
    }
}

/// Each divergence against its definition computed in f64, with padding, tau = 2 and
/// chunking; and its gradient against central finite differences.
#[test]
fn every_divergence_matches_its_definition_and_gradient() {
    let tau = 2.0;
    let s = vec![0.3f32, -1.2, 2.0, 0.1, 0.7, 0.0, -0.5, 1.5, 4.0, -3.0, 0.0, 1.0];
    let t = vec![1.0f32, 0.2, -0.3, 0.4, -1.0, 2.5, 0.0, 0.3, -2.0, 2.0, 1.0, 0.0];
    let cases = reference_divergences();
    let dev = Device::flex().autodiff();
    for (d, reference) in cases {
        // Rows 0 and 1 are real, row 2 is padding.
        let mut want = 0.0;
        for r in 0..2 {
            let sd: Vec<f64> = s[r * 4..r * 4 + 4].iter().map(|x| *x as f64).collect();
            let td: Vec<f64> = t[r * 4..r * 4 + 4].iter().map(|x| *x as f64).collect();
            want += reference(&softmax(&td, tau), &softmax(&sd, tau));
        }
        let want = tau * tau * want / 2.0;
        let mask = || Tensor::<1>::from_data(TensorData::new(vec![1f32, 1.0, 0.0], [3]), &dev);
        let tg = || Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1, 0], [3]), &dev);
        let c = KdConfig { alpha: 0.0, temperature: tau, chunk_tokens: 2, divergence: d };
        let loss_at = |sv: Vec<f32>| {
            kd_loss(t2(sv, 3, &dev), Some(t2(t.clone(), 3, &dev)), tg(), mask(), c).total.into_scalar::<f32>() as f64
        };
        assert!((loss_at(s.clone()) - want).abs() < 1e-5, "{d:?}: {} vs {want}", loss_at(s.clone()));
        let st = t2(s.clone(), 3, &dev).require_grad();
        let g: Vec<f32> = st
            .grad(&kd_loss(st.clone(), Some(t2(t.clone(), 3, &dev)), tg(), mask(), c).total.backward())
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for k in [0, 3, 5, 9] {
            let h = 1e-2f32;
            let (mut up, mut dn) = (s.clone(), s.clone());
            up[k] += h;
            dn[k] -= h;
            let fd = (loss_at(up) - loss_at(dn)) / (2.0 * h as f64);
            let tol = if matches!(d, Divergence::Tv) { 2e-2 } else { 2e-3 };
            assert!((g[k] as f64 - fd).abs() < tol, "{d:?} gradient at {k}: {} vs {fd}", g[k]);
        }
        assert!(g[8..].iter().all(|x| *x == 0.0), "{d:?}: padding gets no gradient");
    }
}

/// Every objective against PyTorch (scripts/divergence_reference.py: F.log_softmax, F.kl_div
/// with log_target, F.cross_entropy, autograd, in float64; TRL's generalized JSD and
/// DistiLLM's skew KLs): loss and gradient with respect to the student logits, tau = 2,
/// two padded rows.
#[test]
fn pytorch_reference() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/divergences.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |n: &str| crate::util::f32s_from_le(st.tensor(n).unwrap().data());
    let (n, v) = (8, 40);
    let dev = Device::flex().autodiff();
    let labels: Vec<i64> = get("labels").iter().map(|x| *x as i64).collect();
    let cases = [
        ("forward_kl_a0.0", Divergence::ForwardKl, 0.0),
        ("reverse_kl_a0.0", Divergence::ReverseKl, 0.0),
        ("jsd_0.3_a0.0", Divergence::Jsd { beta: 0.3 }, 0.0),
        ("jsd_0.7_a0.0", Divergence::Jsd { beta: 0.7 }, 0.0),
        ("skew_forward_0.1_a0.0", Divergence::SkewForwardKl { lambda: 0.1 }, 0.0),
        ("skew_reverse_0.1_a0.0", Divergence::SkewReverseKl { lambda: 0.1 }, 0.0),
        ("tv_a0.0", Divergence::Tv, 0.0),
        ("forward_kl_a0.3", Divergence::ForwardKl, 0.3),
    ];
    for (key, d, alpha) in cases {
        let s = t2(get("student"), n, &dev).require_grad();
        let out = kd_loss(
            s.clone(),
            Some(t2(get("teacher"), n, &dev)),
            Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &dev),
            Tensor::from_data(TensorData::new(get("mask"), [n]), &dev),
            KdConfig { alpha, temperature: 2.0, chunk_tokens: 3, divergence: d },
        );
        let want = get(&format!("loss_{key}"))[0] as f64;
        let got = out.total.clone().into_scalar::<f32>() as f64;
        assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "{key}: loss {got} vs PyTorch {want}");
        let g: Vec<f32> = s.grad(&out.total.backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let gw = get(&format!("grad_{key}"));
        assert_eq!(g.len(), n * v);
        let worst = g.iter().zip(&gw).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "{key}: gradient differs from PyTorch by {worst}");
    }
}

/// Curriculum weights ride on the mask: a weighted mask gives sum_i w_i L_i / sum_i w_i
/// over tokens, L_i the per-token loss.
#[test]
fn weighted_mask_is_the_weighted_mean() {
    let dev = Device::flex();
    let s = vec![0.3f32, -1.2, 2.0, 0.1, 0.7, 0.0, 9.0, -9.0, 5.0];
    let t = vec![1.0f32, 0.2, -0.3, 0.4, -1.0, 2.5, -7.0, 8.0, 1.0];
    let tg = || Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1, 0], [3]), &dev);
    let one = |i: usize| {
        let mut m = vec![0f32; 3];
        m[i] = 1.0;
        let out = kd_loss(
            t2(s.clone(), 3, &dev),
            Some(t2(t.clone(), 3, &dev)),
            tg(),
            Tensor::from_data(TensorData::new(m, [3]), &dev),
            cfg(0.4, 2.0),
        );
        scalar(out.total)
    };
    let w = [1.0f32, 0.1, 0.5];
    let want = (0..3).map(|i| w[i] as f64 * one(i)).sum::<f64>() / w.iter().map(|x| *x as f64).sum::<f64>();
    let got = kd_loss(
        t2(s.clone(), 3, &dev),
        Some(t2(t.clone(), 3, &dev)),
        tg(),
        Tensor::from_data(TensorData::new(w.to_vec(), [3]), &dev),
        cfg(0.4, 2.0),
    );
    let got = scalar(got.total);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

/// The streamed loss has the value and the gradient of the plain one, for full and top-k
/// targets, with chunks that split padded and real rows unevenly.
#[test]
fn streamed_loss_equals_plain_loss() {
    let dev = Device::flex().autodiff();
    let (n, v, k) = (7, 11, 4);
    let mut rng = crate::rng::SplitMix(4);
    let mut r = |m: usize| -> Vec<f32> { (0..m).map(|_| (rng.uniform() * 6.0 - 3.0) as f32).collect() };
    let (sv, tv) = (r(n * v), r(n * v));
    let ids: Vec<i64> = (0..n).flat_map(|i| (0..k).map(move |j| ((i + 3 * j) % v) as i64)).collect();
    let logp: Vec<f32> = r(n * k).iter().map(|x| x - 3.0).collect();
    let tail: Vec<f32> = r(n).iter().map(|x| x - 2.0).collect();
    let targets = || {
        Tensor::<1, Int>::from_data(TensorData::new((0..n as i64).map(|i| i % v as i64).collect::<Vec<_>>(), [n]), &dev)
    };
    let mask = || Tensor::<1>::from_data(TensorData::new(vec![1f32, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0], [n]), &dev);
    let topk = || {
        Target::TopK(TopK {
            ids: Tensor::from_data(TensorData::new(ids.clone(), [n, k]), &dev),
            logp: Tensor::from_data(TensorData::new(logp.clone(), [n, k]), &dev),
            tail: Some(Tensor::from_data(TensorData::new(tail.clone(), [n]), &dev)),
        })
    };
    for d in [Divergence::ForwardKl, Divergence::Jsd { beta: 0.3 }, Divergence::Tv] {
        for which in 0..2 {
            let target = || if which == 0 { Target::Full(t2(tv.clone(), n, &dev)) } else { topk() };
            let c = KdConfig { alpha: 0.3, temperature: 2.0, chunk_tokens: 3, divergence: d };
            let run = |streamed: bool| {
                let s = t2(sv.clone(), n, &dev).require_grad();
                let out = if streamed {
                    kd_loss_streamed(s.clone(), Some(target()), targets(), mask(), c)
                } else {
                    kd_loss_to(s.clone(), Some(target()), targets(), mask(), c)
                };
                let (total, ce, kl) = (scalar(out.total.clone()), scalar(out.ce), scalar(out.kl));
                let g: Vec<f32> = s.grad(&out.total.backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
                (total, ce, kl, g)
            };
            let (a, b) = (run(false), run(true));
            assert!(
                (a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-5 && (a.2 - b.2).abs() < 1e-5,
                "{d:?}/{which}: {a:?} vs {b:?}"
            );
            let worst = a.3.iter().zip(&b.3).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "{d:?}/{which}: gradients differ by {worst}");
        }
    }
}

/// The closed-form chunk gradient (hard labels alone, or full logits with forward KL) equals the
/// autodiff chunk it replaces: loss, parts and gradient, for fractional weights and padding,
/// several alphas and temperatures, and chunks that do not divide the rows.
#[test]
fn closed_form_chunks_equal_the_autodiff_chunks() {
    let dev = Device::flex().autodiff();
    let (n, v) = (11, 13);
    let mut rng = crate::rng::SplitMix(21);
    let mut r = |m: usize| -> Vec<f32> { (0..m).map(|_| (rng.uniform() * 8.0 - 4.0) as f32).collect() };
    let (sv, tv) = (r(n * v), r(n * v));
    let labels: Vec<i64> = (0..n as i64).map(|i| (7 * i + 3) % v as i64).collect();
    let mask = vec![1f32, 1.0, 0.0, 0.25, 1.0, 0.0, 1.0, 0.5, 1.0, 1.0, 0.75];
    for (alpha, tau, chunk, teacher) in
        [(0.5, 2.0, 4, true), (0.0, 1.0, 11, true), (0.9, 0.7, 3, true), (1.0, 1.0, 5, false)]
    {
        for d in [Divergence::ForwardKl, Divergence::Jsd { beta: 0.0 }] {
            let c = KdConfig { alpha, temperature: tau, chunk_tokens: chunk, divergence: d };
            let run = |closed: bool| {
                let s = t2(sv.clone(), n, &dev).require_grad();
                // The online teacher's logits are plain tensors; labels and mask are on the student's device.
                let t = teacher.then(|| Target::Full(t2(tv.clone(), n, &Device::flex())));
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &dev);
                let m = Tensor::<1>::from_data(TensorData::new(mask.clone(), [n]), &dev);
                let out = streamed(s.clone(), t, y, m, c, closed);
                let parts = [scalar(out.total.clone()), scalar(out.ce), scalar(out.kl)];
                let g: Vec<f32> = s.grad(&out.total.backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
                (parts, g)
            };
            let ((want, gw), (got, gg)) = (run(false), run(true));
            for (name, (a, b)) in ["total", "ce", "kl"].iter().zip(want.iter().zip(&got)) {
                assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{d:?} alpha {alpha} tau {tau}: {name} {b} vs {a}");
            }
            let worst = gw.iter().zip(&gg).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "{d:?} alpha {alpha} tau {tau}: gradients differ by {worst}");
            assert!(gw.iter().any(|x| x.abs() > 1e-3), "a gradient to compare");
        }
    }
}

/// The LM head fused into the chunks gives the loss, its parts and the gradients with respect
/// to the hidden states and the head of the unfused streamed loss over `hidden head^T`: hard
/// labels, full logits (closed form) and top-k targets with a tail (autodiff chunks).
///
/// With `--features tch` the same on LibTorch (CPU here), where dW accumulates in place and
/// reaches autodiff as a given gradient, scaled by what reaches the loss (2.5 here).
#[test]
#[allow(deprecated)]
fn fused_head_equals_the_loss_over_materialized_logits() {
    fused_head_on(&Device::flex());
    #[cfg(feature = "tch")]
    fused_head_on(&Device::libtorch());
}

fn fused_head_on(plain: &Device) {
    let dev = plain.clone().autodiff();
    let (n, d, v, k) = (9, 6, 11, 3);
    let mut rng = crate::rng::SplitMix(5);
    let mut r = |m: usize, s: f64| -> Vec<f32> { (0..m).map(|_| ((rng.uniform() * 2.0 - 1.0) * s) as f32).collect() };
    let (hv, wv, tv) = (r(n * d, 1.5), r(v * d, 1.0), r(n * v, 3.0));
    let ids: Vec<i64> = (0..n * k).map(|i| ((i * 4) % v) as i64).collect();
    let (logp, tail) = (
        r(n * k, 1.0).iter().map(|x| x - 2.5).collect::<Vec<_>>(),
        r(n, 1.0).iter().map(|x| x - 3.0).collect::<Vec<_>>(),
    );
    let labels: Vec<i64> = (0..n as i64).map(|i| (3 * i + 1) % v as i64).collect();
    let mask = vec![1f32, 0.5, 0.0, 1.0, 1.0, 0.25, 1.0, 0.0, 1.0];
    for which in 0..3 {
        let c = KdConfig { alpha: 0.3, temperature: 2.0, chunk_tokens: 4, divergence: Divergence::ForwardKl };
        let target = || match which {
            0 => None,
            1 => Some(Target::Full(t2(tv.clone(), n, plain))),
            _ => Some(Target::TopK(TopK {
                ids: Tensor::from_data(TensorData::new(ids.clone(), [n, k]), &dev),
                logp: Tensor::from_data(TensorData::new(logp.clone(), [n, k]), &dev),
                tail: Some(Tensor::from_data(TensorData::new(tail.clone(), [n]), &dev)),
            })),
        };
        let run = |fused: bool| {
            let h = t2(hv.clone(), n, &dev).require_grad();
            let w = t2(wv.clone(), v, &dev).require_grad();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &dev);
            let m = Tensor::<1>::from_data(TensorData::new(mask.clone(), [n]), &dev);
            let out = match fused {
                true => kd_loss_fused_head(h.clone(), w.clone(), target(), y, m, c),
                false => kd_loss_streamed(h.clone().matmul(w.clone().transpose()), target(), y, m, c),
            };
            let parts = [scalar(out.total.clone()), scalar(out.ce), scalar(out.kl)];
            let g = (out.total * 2.5).backward();
            let vec = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().unwrap();
            (parts, vec(h.grad(&g).unwrap()), vec(w.grad(&g).unwrap()))
        };
        let (want, got) = (run(false), run(true));
        for (a, b) in want.0.iter().zip(&got.0) {
            assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "target {which}: {:?} vs {:?}", got.0, want.0);
        }
        for (name, a, b) in [("dH", &want.1, &got.1), ("dW", &want.2, &got.2)] {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "target {which}: {name} differs by {worst}");
            assert!(a.iter().any(|x| x.abs() > 1e-4), "target {which}: a {name} to compare");
        }
    }
}

/// An online teacher's hidden states and head, made into logits chunk by chunk, give the loss
/// and gradients of its materialized logits (`hidden head^T`, multiplied out naively here):
/// through the unfused, the streamed (closed form and autodiff chunks) and the fused-head loss.
#[test]
fn teacher_head_in_the_chunks_equals_its_materialized_logits() {
    let (dev, plain) = (Device::flex().autodiff(), Device::flex());
    let (n, d, dt, v) = (7, 5, 4, 9);
    let mut rng = crate::rng::SplitMix(17);
    let mut r = |m: usize, s: f64| -> Vec<f32> { (0..m).map(|_| ((rng.uniform() * 2.0 - 1.0) * s) as f32).collect() };
    let (hv, wv, th, tw) = (r(n * d, 1.5), r(v * d, 1.0), r(n * dt, 2.0), r(v * dt, 2.0));
    let logits: Vec<f32> = (0..n)
        .flat_map(|i| {
            let (th, tw) = (&th, &tw);
            (0..v).map(move |j| (0..dt).map(|k| th[i * dt + k] as f64 * tw[j * dt + k] as f64).sum::<f64>() as f32)
        })
        .collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| (2 * i + 1) % v as i64).collect();
    let mask = vec![1f32, 0.5, 0.0, 1.0, 1.0, 0.25, 1.0];
    for d_kind in [Divergence::ForwardKl, Divergence::ReverseKl] {
        let c = KdConfig { alpha: 0.4, temperature: 2.0, chunk_tokens: 3, divergence: d_kind };
        let run = |path: usize, hidden_target: bool| {
            let target = match hidden_target {
                true => Target::Hidden { hidden: t2(th.clone(), n, &plain), head: t2(tw.clone(), v, &plain) },
                false => Target::Full(t2(logits.clone(), n, &plain)),
            };
            let h = t2(hv.clone(), n, &dev).require_grad();
            let w = t2(wv.clone(), v, &dev).require_grad();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &dev);
            let m = Tensor::<1>::from_data(TensorData::new(mask.clone(), [n]), &dev);
            let s = || h.clone().matmul(w.clone().transpose());
            let out = match path {
                0 => kd_loss_to(s(), Some(target), y, m, c),
                1 => kd_loss_streamed(s(), Some(target), y, m, c),
                _ => kd_loss_fused_head(h.clone(), w.clone(), Some(target), y, m, c),
            };
            let parts = [scalar(out.total.clone()), scalar(out.ce), scalar(out.kl)];
            let g = out.total.backward();
            let vec = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().unwrap();
            (parts, vec(h.grad(&g).unwrap()), vec(w.grad(&g).unwrap()))
        };
        for path in 0..3 {
            let (want, got) = (run(path, false), run(path, true));
            for (a, b) in want.0.iter().zip(&got.0) {
                assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{d_kind:?} path {path}: {:?} vs {:?}", got.0, want.0);
            }
            assert!(want.0[2] > 1e-3, "a divergence to compare");
            for (name, a, b) in [("dH", &want.1, &got.1), ("dW", &want.2, &got.2)] {
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "{d_kind:?} path {path}: {name} differs by {worst}");
            }
        }
    }
}
