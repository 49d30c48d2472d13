use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};

use crate::model::attention::grouped_attention;

/// An attention function of q, k and v.
type Attend<'a> = dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4> + 'a;

/// `[y, dq, dk, dv, y untracked]`: `attend(q, k, v)` and the gradients of `sum(y * w)` under
/// autodiff on `device`, then `attend` on plain tensors; `data` is q, k, v, w, cast to
/// `dtype` (kept as they are with `None`).
fn value_and_grads(
    device: &Device,
    dtype: Option<DType>,
    data: &[TensorData; 4],
    attend: &Attend<'_>,
) -> [Vec<f32>; 5] {
    let ad = device.clone().autodiff();
    let cast = |x: Tensor<4>| match dtype {
        Some(d) => x.cast(d),
        None => x,
    };
    let x = |i: usize| cast(Tensor::<4>::from_data(data[i].clone(), &ad)).require_grad();
    let (q, k, v) = (x(0), x(1), x(2));
    let y = attend(q.clone(), k.clone(), v.clone());
    let g = (y.clone() * cast(Tensor::<4>::from_data(data[3].clone(), &ad))).sum().backward();
    let vec = |x: Tensor<4>| x.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let plain = |i: usize| cast(Tensor::<4>::from_data(data[i].clone(), device));
    let y_plain = attend(plain(0), plain(1), plain(2));
    [vec(y.inner()), vec(q.grad(&g).unwrap()), vec(k.grad(&g).unwrap()), vec(v.grad(&g).unwrap()), vec(y_plain)]
}

/// The largest absolute difference, and the largest absolute value of `want`.
fn max_err(want: &[f32], got: &[f32]) -> (f32, f32) {
    let err = want.iter().zip(got).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    (err, want.iter().map(|x| x.abs()).fold(0.0f32, f32::max))
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
        let attend = |q, k, v| grouped_attention(q, k, v, 0, None);
        let want = value_and_grads(&flex, None, &data, &attend);
        let got = value_and_grads(&Device::libtorch(), None, &data, &attend);
        assert_eq!(got[2].len(), b * kv * t * d, "dk has the KV heads' shape");
        for (name, (w, g)) in ["y", "dq", "dk", "dv"].iter().zip(want.iter().zip(&got)) {
            let (err, scale) = max_err(w, g);
            assert!(err <= 1e-5 * scale.max(1.0), "{name} (b{b} h{h} kv{kv} t{t} d{d}): max err {err}");
        }
    }
}

/// Windowed attention and queries after cached keys in f32 on LibTorch (which no fused
/// kernel takes: the reference path, masked) give the flex reference's output and gradients.
/// burn-tch hands burn's boolean mask to PyTorch inverted; this failed before the mask was
/// applied by our own composition.
#[test]
fn masked_reference_on_libtorch_equals_flex() {
    let flex = Device::flex();
    for (h, kv, start, t, d, w) in [(4, 2, 0, 40, 16, Some(8)), (4, 1, 9, 5, 16, None), (2, 2, 6, 7, 8, Some(3))] {
        let rnd = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &flex).into_data();
        let s = start + t;
        let data = [rnd([1, h, t, d]), rnd([1, kv, s, d]), rnd([1, kv, s, d]), rnd([1, h, t, d])];
        let attend = |q, k, v| grouped_attention(q, k, v, start, w);
        let want = value_and_grads(&flex, None, &data, &attend);
        let got = value_and_grads(&Device::libtorch(), None, &data, &attend);
        for (name, (w_, g)) in ["y", "dq", "dk", "dv", "y plain"].iter().zip(want.iter().zip(&got)) {
            let (err, _) = max_err(w_, g);
            assert!(err < 1e-5, "{name} (start {start} t {t} window {w:?}): max err {err}");
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

/// The GPU's fused kernels called directly (bf16; skipped without a GPU): cuDNN's for full
/// causal attention and FlashAttention-2 for everything, each give the output and the three
/// gradients of the reference attention (burn flex, f32, materialized scores, on the same
/// bf16-rounded inputs) within bf16 rounding: MHA, GQA and MQA, head dims 32 / 64 / 128,
/// lengths off the tiles, sliding windows, queries after cached keys (one and several), and
/// plain tensors (the frozen teacher). Each kernel must take the calls it is chosen for.
#[test]
fn gpu_kernels_equal_the_reference_attention_and_its_gradients() {
    use super::GpuKernel::{Cudnn, Flash};
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU attention kernels not checked");
        return;
    }
    let flex = Device::flex();
    let gpu = Device::libtorch_cuda(0);
    let bf = DType::BF16;
    for (b, h, kv, start, t, d, w) in [
        (2, 4, 4, 0, 37, 64, None),
        (1, 8, 2, 0, 130, 128, None),
        (2, 4, 1, 0, 65, 32, None),
        (2, 4, 1, 0, 65, 32, Some(16)),
        (1, 4, 2, 0, 200, 128, Some(64)),
        (1, 4, 2, 50, 30, 64, None),
        (2, 8, 2, 100, 1, 64, Some(20)),
        (1, 4, 4, 0, 300, 64, Some(1)),
    ] {
        let s = start + t;
        let bf16 = |x: Tensor<4>| x.cast(bf).cast(DType::F32).into_data();
        let rnd = |shape: [usize; 4]| bf16(Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &flex));
        let data = [rnd([b, h, t, d]), rnd([b, kv, s, d]), rnd([b, kv, s, d]), rnd([b, h, t, d])];
        let want = value_and_grads(&flex, None, &data, &|q, k, v| grouped_attention(q, k, v, start, w));
        let full = start == 0 && w.is_none();
        for kernel in [Cudnn, Flash].into_iter().filter(|&k| full || k == Flash) {
            let only = |q, k, v| {
                super::with_kernels(&[kernel], q, k, v, start, w)
                    .unwrap_or_else(|_| panic!("{kernel:?} refused b{b} h{h} kv{kv} start{start} t{t} d{d} {w:?}"))
            };
            let got = value_and_grads(&gpu, Some(bf), &data, &only);
            let case = format!("{kernel:?} b{b} h{h} kv{kv} start{start} t{t} d{d} window {w:?}");
            for (name, (w, g)) in ["y", "dq", "dk", "dv", "y untracked"].iter().zip(want.iter().zip(&got)) {
                let (err, scale) = max_err(w, g);
                assert!(err <= 2e-2 * scale.max(1.0), "{name} ({case}): max err {err} (scale {scale})");
            }
        }
        // The model's seam takes the same calls (whichever kernel it picks).
        let x = |i: usize| Tensor::<4>::from_data(data[i].clone(), &gpu).cast(bf);
        assert!(super::flash(x(0), x(1), x(2), start, w).is_ok(), "seam refused");
    }
}

/// Packed documents on the GPU: FlashAttention-2's variable-length kernel gives the output and
/// gradients of the block-diagonal reference (burn flex, f32, mask spelled out) within bf16
/// rounding: GQA and MQA, documents crossing no row, a window, plain tensors.
#[test]
fn gpu_packed_documents_equal_the_masked_reference() {
    use crate::model::DocPositions;
    use crate::model::attention::masked_attention;
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: packed-document attention not checked");
        return;
    }
    let flex = Device::flex();
    let gpu = Device::libtorch_cuda(0);
    let bf = DType::BF16;
    // Row 0: documents of 5, 17 and 42 tokens; row 1: 30 and 34.
    let (b, t) = (2, 64);
    let mut pos = Vec::new();
    for lens in [[5usize, 17, 42].as_slice(), [30, 34].as_slice()] {
        for &n in lens {
            pos.extend(0..n as u32);
        }
    }
    let docs = DocPositions::new(pos, b, t);
    for (h, kv, d, w) in [(4, 2, 64, None), (8, 1, 128, None), (4, 4, 32, Some(8))] {
        let bf16 = |x: Tensor<4>| x.cast(bf).cast(DType::F32).into_data();
        let rnd = |shape: [usize; 4]| bf16(Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &flex));
        let data = [rnd([b, h, t, d]), rnd([b, kv, t, d]), rnd([b, kv, t, d]), rnd([b, h, t, d])];
        let reference = |q: Tensor<4>, k, v| {
            let hidden = docs.hidden(w, &q.device());
            masked_attention(q, k, v, hidden)
        };
        let want = value_and_grads(&flex, None, &data, &reference);
        let fused = |q, k, v| super::flash_documents(q, k, v, w, &docs.pos).unwrap_or_else(|_| panic!("refused"));
        let got = value_and_grads(&gpu, Some(bf), &data, &fused);
        for (name, (w_, g)) in ["y", "dq", "dk", "dv", "y untracked"].iter().zip(want.iter().zip(&got)) {
            let (err, scale) = max_err(w_, g);
            assert!(
                err <= 2e-2 * scale.max(1.0),
                "{name} (h{h} kv{kv} d{d} window {w:?}): max err {err} (scale {scale})"
            );
        }
    }
}
