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

/// `(y, dL/dinputs...)` of `L = sum(f(inputs) * w)` under autodiff on Flex, every input
/// tracked; `w` is a fixed random weighting so that each output element's gradient differs.
fn value_and_grads<const D: usize, const E: usize>(
    inputs: &[(TensorData, bool)],
    f: impl Fn(Vec<Tensor<D>>) -> Tensor<E>,
) -> Vec<Vec<f32>> {
    let ad = Device::flex().autodiff();
    let xs: Vec<Tensor<D>> =
        inputs.iter().map(|(d, _)| Tensor::<D>::from_data(d.clone(), &ad).require_grad()).collect();
    let y = f(xs.clone());
    let n = y.dims().iter().product::<usize>();
    let w: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let w = Tensor::<E>::from_data(TensorData::new(w, y.dims()), &ad);
    let g = (y.clone() * w).sum().backward();
    let mut out = vec![vals(y.inner())];
    for (x, (_, want)) in xs.iter().zip(inputs) {
        if *want {
            out.push(vals(x.grad(&g).expect("a gradient")));
        }
    }
    out
}

thread_local! {
    /// Draws so far on this thread: libtest runs each test on a thread of its own, so a test's
    /// inputs are the same in every run and a failure reproduces (with `--test-threads 1` the
    /// tests share one, and their order fixes the draws).
    static DRAWS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Normal values of the given spread, seeded by the test's own draw count.
fn rnd<const D: usize>(shape: [usize; D], std: f64) -> TensorData {
    let n = DRAWS.with(|d| d.replace(d.get() + 1));
    let dev = Device::flex();
    crate::model::init::Init::new(0x7e57_0000 + n, &dev).normal(shape, std).into_data()
}

/// The fused RMSNorm: output, dx and dgamma equal burn's `RmsNorm` (the composition it
/// replaces) under autodiff, and plain tensors take it too. Rows of a few units and one row
/// of huge values (the statistic's range).
#[test]
fn rms_norm_equals_burn_rms_norm_and_its_gradients() {
    use burn::nn::RmsNormConfig;
    let (rows, d) = (70, 96);
    let x = Tensor::<2>::from_data(rnd([rows, d], 2.0), &Device::flex());
    let x = x.slice_assign([3..4, 0..d], Tensor::full([1, d], 3e3, &Device::flex())).into_data();
    let gamma = rnd([d], 1.0);
    for eps in [1e-5, 1e-6] {
        let inputs = [(x.clone(), true)];
        let run = |fused: bool| {
            value_and_grads::<2, 2>(&inputs, |xs| {
                let ad = xs[0].device();
                let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(&ad);
                norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(gamma.clone(), &ad));
                match fused {
                    true => {
                        super::rms_norm(xs[0].clone(), norm.gamma.val(), eps).unwrap_or_else(|_| panic!("f32 flex"))
                    }
                    false => norm.forward(xs[0].clone()),
                }
            })
        };
        let (got, want) = (run(true), run(false));
        close(&got[0], &want[0], 2e-6, "y");
        close(&got[1], &want[1], 2e-5, "dx");
    }
    // dgamma, through gamma as the tracked input.
    let xt = Tensor::<2>::from_data(x.clone(), &Device::flex());
    let inputs = [(gamma.clone(), true)];
    let run = |fused: bool| {
        value_and_grads::<1, 2>(&inputs, |g| {
            let x = Tensor::<2>::from_data(xt.clone().into_data(), &g[0].device());
            match fused {
                true => super::rms_norm(x, g[0].clone(), 1e-5).unwrap_or_else(|_| panic!("f32 flex")),
                false => {
                    let rms = (x.clone().square().mean_dim(1) + 1e-5).sqrt();
                    (x / rms) * g[0].clone().unsqueeze()
                }
            }
        })
    };
    let (got, want) = (run(true), run(false));
    close(&got[1], &want[1], 2e-5, "dgamma");
    let plain = super::rms_norm(xt.clone(), Tensor::from_data(gamma.clone(), &Device::flex()), 1e-5);
    close(&vals(plain.unwrap_or_else(|_| panic!("plain flex"))), &got[0], 0.0, "plain y");
}

/// `silu(a) * b` and its two gradients equal burn's composition, over the range where the
/// sigmoid saturates both ways.
#[test]
fn silu_mul_equals_the_composition_and_its_gradients() {
    use burn::tensor::activation::silu;
    let shape = [3, 50, 77];
    let a = Tensor::<3>::from_data(rnd(shape, 4.0), &Device::flex());
    let a = a.slice_assign([0..1, 0..1, 0..3], Tensor::from_data([[[-100.0f32, 95.0, 0.0]]], &Device::flex()));
    let inputs = [(a.into_data(), true), (rnd(shape, 1.0), true)];
    let run = |fused: bool| {
        value_and_grads::<3, 3>(&inputs, |x| match fused {
            true => super::silu_mul(x[0].clone(), x[1].clone()).unwrap_or_else(|_| panic!("f32 flex")),
            false => silu(x[0].clone()) * x[1].clone(),
        })
    };
    let (got, want) = (run(true), run(false));
    close(&got[0], &want[0], 1e-6, "h");
    close(&got[1], &want[1], 1e-6, "da");
    close(&got[2], &want[2], 1e-6, "db");
}

/// What the fused attention replaces: heads split, RoPE (`model::rope::apply`), burn's causal
/// (or windowed) GQA attention (`reference_attention`, scores materialized), heads merged.
fn rope_reference(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, h: usize, kv: usize, w: Option<usize>) -> Tensor<3> {
    use crate::model::{attention::reference_attention, rope};
    let [b, t, width] = q.dims();
    let hd = width / h;
    let (cos, sin) = rope::tables(t, 0, hd, 10_000.0, None, &q.device());
    let split = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
    let (q, k) = (rope::apply(split(q, h), &cos, &sin), rope::apply(split(k, kv), &cos, &sin));
    reference_attention(q, k, split(v, kv), 0, w).swap_dims(1, 2).reshape([b, t, width])
}

/// The fused RoPE attention gives the reference's output and its dq, dk, dv for MHA, GQA and
/// MQA, head dims 32, 64 and 128, lengths below, at and across the 64-row blocks, full causal
/// and with sliding windows (shorter than a block, spanning blocks, longer than the sequence,
/// and of one token); plain tensors (the frozen teacher) get the same output.
#[test]
fn rope_attention_equals_the_reference_and_its_gradients() {
    use crate::model::rope;
    for (b, h, kv, t, hd, w) in [
        (2, 4, 4, 37, 32, None),
        (1, 4, 2, 130, 64, None),
        (2, 4, 1, 64, 32, None),
        (1, 6, 2, 1, 64, None),
        (1, 2, 1, 70, 128, None),
        (1, 4, 2, 150, 32, Some(16)),
        (2, 4, 1, 130, 64, Some(70)),
        (1, 2, 2, 40, 32, Some(100)),
        (1, 2, 1, 66, 32, Some(1)),
        (1, 4, 4, 200, 128, Some(64)),
    ] {
        let inputs =
            [(rnd([b, t, h * hd], 1.0), true), (rnd([b, t, kv * hd], 1.0), true), (rnd([b, t, kv * hd], 1.0), true)];
        let run = |fused: bool| {
            value_and_grads::<3, 3>(&inputs, |x| {
                let [q, k, v] = [x[0].clone(), x[1].clone(), x[2].clone()];
                match fused {
                    true => {
                        let (cos, sin) = rope::tables(t, 0, hd, 10_000.0, None, &q.device());
                        super::rope_attention(q, k, v, &cos, &sin, h, kv, w, None)
                            .unwrap_or_else(|_| panic!("f32 flex"))
                    }
                    false => rope_reference(q, k, v, h, kv, w),
                }
            })
        };
        let (got, want) = (run(true), run(false));
        let case = format!("b{b} h{h} kv{kv} t{t} hd{hd} window {w:?}");
        for (i, name) in ["y", "dq", "dk", "dv"].iter().enumerate() {
            close(&got[i], &want[i], 1e-5, &format!("{name} ({case})"));
        }
        let plain = |i: usize| Tensor::<3>::from_data(inputs[i].0.clone(), &Device::flex());
        let (cos, sin) = rope::tables(t, 0, hd, 10_000.0, None, &Device::flex());
        let y = super::rope_attention(plain(0), plain(1), plain(2), &cos, &sin, h, kv, w, None)
            .unwrap_or_else(|_| panic!("plain flex"));
        close(&vals(y), &want[0], 1e-5, &format!("plain y ({case})"));
    }
}

/// The fused kernel on rotated heads with queries after cached keys (decoding, or scoring a
/// continuation) gives burn's masked attention (`reference_attention`, which aligns the causal
/// mask bottom-right) and its dq, dk and dv: one and many queries, offsets inside and across
/// the 64-row blocks, MHA/GQA/MQA, head dims 32, 64 and 128, with and without windows.
#[test]
fn grouped_attention_with_cached_keys_equals_the_reference() {
    use crate::model::attention::reference_attention;
    for (b, h, kv, start, t, hd, w) in [
        (1, 4, 2, 5, 1, 32, None),
        (2, 4, 4, 70, 3, 64, None),
        (1, 4, 1, 37, 100, 32, None),
        (1, 2, 2, 0, 67, 128, None),
        (1, 6, 2, 130, 1, 64, Some(16)),
        (2, 4, 1, 9, 80, 32, Some(20)),
        (1, 2, 1, 64, 64, 128, Some(1)),
        (1, 4, 2, 20, 30, 64, Some(200)),
    ] {
        let s = start + t;
        let inputs =
            [(rnd([b, h, t, hd], 1.0), true), (rnd([b, kv, s, hd], 1.0), true), (rnd([b, kv, s, hd], 1.0), true)];
        let run = |fused: bool| {
            value_and_grads::<4, 4>(&inputs, |x| {
                let [q, k, v] = [x[0].clone(), x[1].clone(), x[2].clone()];
                match fused {
                    true => super::grouped(q, k, v, start, w, None).unwrap_or_else(|_| panic!("f32 flex")),
                    false => reference_attention(q, k, v, start, w),
                }
            })
        };
        let (got, want) = (run(true), run(false));
        let case = format!("b{b} h{h} kv{kv} start{start} t{t} hd{hd} window {w:?}");
        for (i, name) in ["y", "dq", "dk", "dv"].iter().enumerate() {
            close(&got[i], &want[i], 1e-5, &format!("{name} ({case})"));
        }
        let plain = |i: usize| Tensor::<4>::from_data(inputs[i].0.clone(), &Device::flex());
        let y = super::grouped(plain(0), plain(1), plain(2), start, w, None).unwrap_or_else(|_| panic!("plain flex"));
        close(&vals(y), &want[0], 1e-5, &format!("plain y ({case})"));
    }
    // Keys that do not cover the queries' positions are refused, not read out of bounds.
    let x = |shape: [usize; 4]| Tensor::<4>::zeros(shape, &Device::flex());
    assert!(super::grouped(x([1, 2, 3, 8]), x([1, 2, 4, 8]), x([1, 2, 4, 8]), 2, None, None).is_err());
    assert!(super::grouped(x([1, 3, 3, 8]), x([1, 2, 5, 8]), x([1, 2, 5, 8]), 2, None, None).is_err());
}

/// burn-flex's matmul, which the `x86-v4` feature sends to the `gemm` crate's AVX-512 kernels
/// on CPUs that have them (under every linear layer), equals a naive f64 product, for shapes
/// that are no multiple of a register tile and for a transposed (strided) operand.
#[test]
fn flex_matmul_equals_a_naive_product() {
    for (m, k, n) in [(67, 129, 71), (300, 256, 704)] {
        let (a, b) = (rnd([m, k], 1.0), rnd([n, k], 1.0));
        let (av, bv): (Vec<f32>, Vec<f32>) = (a.iter().collect(), b.iter().collect());
        let dev = Device::flex();
        let got = vals(Tensor::<2>::from_data(a, &dev).matmul(Tensor::<2>::from_data(b, &dev).transpose()));
        let want: Vec<f32> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k).map(|l| av[i * k + l] as f64 * bv[j * k + l] as f64).sum::<f64>() as f32
            })
            .collect();
        // f32 sums of k products of unit normals: rounding grows like sqrt(k) eps |terms|, and
        // a sum that cancels to near zero has no relative precision (2.2e-5 seen at k 256); a
        // wrong kernel is off by O(1).
        close(&got, &want, 1e-4, &format!("{m}x{k}x{n}"));
    }
}
