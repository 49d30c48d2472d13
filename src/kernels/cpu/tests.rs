//! Each CPU kernel against the burn composition it replaces, on values with the spread that
//! training sees (logits of a few units, some large ones, ties), within float rounding.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use crate::kd_loss::{KdConfig, closed_form_reference};

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs();
        assert!(err <= tol * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b} (err {err})");
    }
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

#[test]
fn kd_closed_form_equals_the_composition() {
    let dev = Device::flex();
    let (n, v) = (37, 1003);
    for (teacher, alpha, tau) in [(true, 0.5, 2.0), (true, 0.2, 1.0), (true, 1.0, 4.0), (false, 1.0, 1.0)] {
        let s = Tensor::<2>::random([n, v], Distribution::Normal(0.0, 3.0), &dev);
        // One row with a dominant logit, one with ties: the max and the sums must handle both.
        let s = s.slice_assign([0..1, 5..6], Tensor::full([1, 1], 40.0, &dev));
        let s = s.slice_assign([1..2, 0..v], Tensor::full([1, v], 0.25, &dev));
        let t = teacher.then(|| Tensor::<2>::random([n, v], Distribution::Normal(0.0, 2.0), &dev));
        let labels: Vec<i64> = (0..n as i64).map(|i| (i * 131) % v as i64).collect();
        let tgt = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &dev).unsqueeze_dim::<2>(1);
        let w = Tensor::<1>::random([n], Distribution::Uniform(0.0, 0.1), &dev);
        let cfg =
            KdConfig { alpha, temperature: tau, chunk_tokens: n, divergence: crate::kd_loss::Divergence::ForwardKl };
        let got = super::kd_closed_form(&s, t.as_ref(), &tgt, &w, alpha, tau).expect("flex f32 takes the kernel");
        let want = closed_form_reference(s, t, tgt, w, cfg);
        close(&vals(got.0), &vals(want.0), 1e-5, "ce");
        close(&vals(got.1), &vals(want.1), 1e-4, "kl");
        close(&vals(got.2), &vals(want.2), 2e-6, "grad");
    }
}

/// Off the kernel's backend or dtype, nothing is computed and the reference path runs.
#[test]
fn kd_closed_form_declines_what_it_does_not_cover() {
    let dev = Device::flex();
    let s = Tensor::<2>::zeros([2, 3], &dev);
    let tgt = Tensor::<2, Int>::zeros([2, 1], &dev);
    let w = Tensor::<1>::ones([2], &dev);
    let f64s = s.clone().cast(burn::tensor::DType::F64);
    assert!(super::kd_closed_form(&f64s, None, &tgt, &w, 1.0, 1.0).is_none());
    let bad = Tensor::<2, Int>::full([2, 1], 3, &dev);
    assert!(super::kd_closed_form(&s, None, &bad, &w, 1.0, 1.0).is_none());
    assert!(super::kd_closed_form(&s, None, &tgt, &w, 1.0, 1.0).is_some());
}
