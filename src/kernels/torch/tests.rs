use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::model::attention::grouped_attention;

/// `(y, dq, dk, dv)` of `sum(attention(q, k, v) * w)` on `device` under autodiff.
fn run(device: &Device, data: &[TensorData; 4], n_kv: usize) -> [Vec<f32>; 4] {
    let ad = device.clone().autodiff();
    let t = |d: &TensorData| Tensor::<4>::from_data(d.clone(), &ad).require_grad();
    let (q, k, v, w) = (t(&data[0]), t(&data[1]), t(&data[2]), Tensor::<4>::from_data(data[3].clone(), &ad));
    let y = grouped_attention(q.clone(), k.clone(), v.clone(), 0, None);
    assert_eq!(k.dims()[1], n_kv);
    let g = (y.clone() * w).sum().backward();
    let vec = |x: Tensor<4>| x.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    [vec(y.inner()), vec(q.grad(&g).unwrap()), vec(k.grad(&g).unwrap()), vec(v.grad(&g).unwrap())]
}

/// The fused LibTorch op (PyTorch's SDPA forward and backward) gives the output and the
/// three gradients of the reference attention (burn flex, materialized scores), for MHA,
/// GQA and MQA, head dims 32 / 64 / 128 and lengths that are no multiple of a tile.
#[test]
fn torch_sdpa_equals_the_reference_attention_and_its_gradients() {
    let flex = Device::flex();
    for (b, h, kv, t, d) in [(2, 4, 4, 37, 32), (1, 8, 2, 130, 64), (2, 4, 1, 65, 128)] {
        let rnd = |heads, seed| {
            Tensor::<4>::random([b, heads, t, d], Distribution::Normal(0.0, 1.0), &flex)
                .mul_scalar(0.5 + 0.01 * seed as f32)
                .into_data()
        };
        let data = [rnd(h, 1), rnd(kv, 2), rnd(kv, 3), rnd(h, 4)];
        let want = run(&flex, &data, kv);
        let got = run(&Device::libtorch(), &data, kv);
        for (name, (w, g)) in ["y", "dq", "dk", "dv"].iter().zip(want.iter().zip(&got)) {
            let err = w.iter().zip(g).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            let scale = w.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            assert!(err <= 1e-5 * scale.max(1.0), "{name} (b{b} h{h} kv{kv} t{t} d{d}): max err {err}");
        }
    }
}

/// Without autodiff, SDPA's own GQA (no repeated K/V) gives the reference attention.
#[test]
fn untracked_gqa_equals_the_reference() {
    let flex = Device::flex();
    let (b, h, kv, t, d) = (2, 8, 2, 45, 32);
    let rnd = |heads| Tensor::<4>::random([b, heads, t, d], Distribution::Normal(0.0, 1.0), &flex).into_data();
    let data = [rnd(h), rnd(kv), rnd(kv)];
    let run = |dev: &Device| {
        let x = |i: usize| Tensor::<4>::from_data(data[i].clone(), dev);
        let y = grouped_attention(x(0), x(1), x(2), 0, None);
        y.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    };
    let (want, got) = (run(&flex), run(&Device::libtorch()));
    let err = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-5, "max err {err}");
    let q = Tensor::<4>::from_data(data[0].clone(), &Device::libtorch());
    assert!(super::causal_gqa_untracked(q.clone(), q.clone(), q).is_ok());
}

/// PyTorch's fused RMSNorm (tracked: forward and both gradients; plain: forward) equals
/// burn's RmsNorm on the reference backend.
#[test]
fn torch_rms_norm_equals_the_reference_and_its_gradients() {
    use burn::module::Param;
    use burn::nn::RmsNorm;
    let flex = Device::flex();
    let (b, t, d) = (2, 7, 48);
    let x = Tensor::<3>::random([b, t, d], Distribution::Normal(0.3, 2.0), &flex).into_data();
    let g = Tensor::<1>::random([d], Distribution::Normal(1.0, 0.5), &flex).into_data();
    let w = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &flex).into_data();
    let vec = |x: Tensor<3>| x.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let run = |dev: &Device| {
        let ad = dev.clone().autodiff();
        let norm = RmsNorm { gamma: Param::from_tensor(Tensor::from_data(g.clone(), &ad)), epsilon: 1e-5 };
        let xt = Tensor::<3>::from_data(x.clone(), &ad).require_grad();
        let y = crate::model::norm::rms_norm(&norm, xt.clone());
        let grads = (y.clone() * Tensor::from_data(w.clone(), &ad)).sum().backward();
        let dg = norm.gamma.val().grad(&grads).unwrap().into_data().convert::<f32>().to_vec::<f32>().unwrap();
        let plain = RmsNorm { gamma: Param::from_tensor(Tensor::from_data(g.clone(), dev)), epsilon: 1e-5 };
        let y_plain = crate::model::norm::rms_norm(&plain, Tensor::<3>::from_data(x.clone(), dev));
        [vec(y.inner()), vec(xt.grad(&grads).unwrap()), dg, vec(y_plain)]
    };
    let (want, got) = (run(&flex), run(&Device::libtorch()));
    for (name, (w, g)) in ["y", "dx", "dgamma", "y untracked"].iter().zip(want.iter().zip(&got)) {
        let err = w.iter().zip(g).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let scale = w.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        assert!(err <= 2e-6 * scale.max(1.0), "{name}: max err {err} (scale {scale})");
    }
}

/// Only tracked LibTorch tensors take the fused path.
#[test]
fn other_backends_get_their_tensors_back() {
    let q = Tensor::<4>::zeros([1, 1, 2, 4], &Device::flex().autodiff());
    assert!(super::causal(q.clone(), q.clone(), q).is_err());
}
