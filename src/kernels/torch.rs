//! The LibTorch route's fast paths behind our seams (cargo feature `tch`), each tested against
//! the reference path it replaces:
//! - [`causal`]: causal attention under autodiff, as one burn autodiff op over PyTorch's fused
//!   scaled-dot-product attention (flash for bf16/f16, memory-efficient for f32);
//! - [`causal_gqa_untracked`]: the frozen teacher's attention with SDPA's own GQA;
//! - [`adamw_update`], [`sum_squares`]: the optimizer's per-parameter work as PyTorch kernels.
//!
//! Why the attention op: burn-autodiff has no fused attention backward; its `attention` falls back to
//! `softmax(QK^T) V` and keeps the `[batch, heads, seq, seq]` scores for the backward. Here the
//! forward runs PyTorch's kernel with PyTorch's own autograd recording it (inputs are detached
//! views of burn's tensors, so nothing is copied), and the burn backward asks PyTorch's autograd
//! for dQ, dK, dV through the fused backward kernel. Only LibTorch tensors take this path; every
//! other backend keeps the reference attention of [`super::attention::grouped_attention`].

// burn marks its LibTorch backend deprecated (in favour of CubeCL); this route is chosen by
// measurement (docs/gpu-route.md).
#![allow(deprecated)]
// The fast paths hand their inputs back (tensor handles, a few words each) when they do not
// apply: nothing worth boxing.
#![allow(clippy::result_large_err)]

use burn::tensor::Tensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_tch::{LibTorch, TchTensor};

type Ad = Autodiff<LibTorch>;

#[derive(Debug)]
struct TorchSdpa;

/// PyTorch's view of the forward: the inputs (leaves that require grad) and the output with
/// its autograd history.
#[derive(Debug, Clone)]
struct Saved {
    q: TchTensor,
    k: TchTensor,
    v: TchTensor,
    out: TchTensor,
}

impl Backward<LibTorch, 3> for TorchSdpa {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let Saved { q, k, v, out } = ops.state;
        // d(sum(out * g))/dx is the vector-Jacobian product with g: one fused backward call.
        let probe = (&out.tensor * grad.tensor.detach()).sum(out.tensor.kind());
        let dx = tch::Tensor::run_backward(&[probe], &[&q.tensor, &k.tensor, &v.tensor], false, false);
        for (node, d) in ops.parents.into_iter().zip(dx) {
            if let Some(node) = node {
                grads.register::<LibTorch>(node.id, TchTensor::new(d));
            }
        }
    }
}

/// Full causal attention (`q`, `k`, `v`: `[batch, heads, seq, head_dim]`, the same head count)
/// through PyTorch's fused kernels when the tensors are tracked LibTorch tensors; otherwise the
/// inputs come back unchanged for the reference path.
pub fn causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let (Ok(pq), Ok(pk), Ok(pv)) = (
        q.clone().try_into_primitive::<Ad>(),
        k.clone().try_into_primitive::<Ad>(),
        v.clone().try_into_primitive::<Ad>(),
    ) else {
        return Err([q, k, v]);
    };
    let leaf = |t: &TchTensor| t.tensor.detach().set_requires_grad(true);
    let (tq, tk, tv) = (leaf(pq.primitive()), leaf(pk.primitive()), leaf(pv.primitive()));
    let out = tch::Tensor::scaled_dot_product_attention(&tq, &tk, &tv, None::<tch::Tensor>, 0.0, true, None, false);
    let value = TchTensor::new(out.detach());
    let nodes = [pq.node(), pk.node(), pv.node()];
    let prim = match TorchSdpa.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let saved =
                Saved { q: TchTensor::new(tq), k: TchTensor::new(tk), v: TchTensor::new(tv), out: TchTensor::new(out) };
            prep.finish(saved, value)
        }
        OpsKind::UnTracked(prep) => prep.finish(value),
    };
    Ok(Tensor::from_primitive::<Ad>(prim))
}

/// Full causal grouped-query attention of plain (untracked) LibTorch tensors, `k`/`v` with
/// fewer heads than `q`, through SDPA's own GQA; anything else comes back unchanged.
pub fn causal_gqa_untracked(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let (Ok(pq), Ok(pk), Ok(pv)) = (
        q.clone().try_into_primitive::<LibTorch>(),
        k.clone().try_into_primitive::<LibTorch>(),
        v.clone().try_into_primitive::<LibTorch>(),
    ) else {
        return Err([q, k, v]);
    };
    let gqa = pq.tensor.size()[1] != pk.tensor.size()[1];
    let out = tch::Tensor::scaled_dot_product_attention(
        &pq.tensor,
        &pk.tensor,
        &pv.tensor,
        None::<tch::Tensor>,
        0.0,
        true,
        None,
        gqa,
    );
    Ok(Tensor::from_primitive::<LibTorch>(TchTensor::new(out)))
}

/// What one AdamW update of a parameter needs (see train/adamw.rs for the arithmetic).
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Adam's step count, from 1.
    pub t: i32,
    pub lr: f64,
    pub grad_scale: f64,
    pub decay: f64,
}

/// The AdamW update of LibTorch parameter `x` (plain) with gradient `g` as eight PyTorch kernels:
/// the moments `(m, v)` are updated in place, or made (and returned) on the first step. `None`
/// when the tensors live on another backend.
pub fn adamw_update<const D: usize>(
    x: &Tensor<D>,
    g: &Tensor<D>,
    moments: Option<(&Tensor<1>, &Tensor<1>)>,
    h: AdamHyper,
) -> Option<(Tensor<D>, Option<(Tensor<1>, Tensor<1>)>)> {
    let (px, pg) = (x.clone().try_into_primitive::<LibTorch>().ok()?, g.clone().try_into_primitive::<LibTorch>().ok()?);
    let size = px.tensor.size();
    let mut gt = pg.tensor.reshape([-1]);
    if h.grad_scale != 1.0 {
        gt *= h.grad_scale;
    }
    let (f1, f2) = (1.0 - h.beta1, 1.0 - h.beta2);
    let prim =
        |t: &Tensor<1>| t.clone().try_into_primitive::<LibTorch>().expect("moments live with the parameter").tensor;
    let (m, v, fresh) = match moments {
        Some((m, v)) => {
            // m <- m + (1 - b1)(g - m), v <- v + (1 - b2)(g^2 - v): Adam's moments, in place.
            let (mut m, mut v) = (prim(m), prim(v));
            let _ = m.lerp_(&gt, f1);
            let _ = v.lerp_(&gt.square(), f2);
            (m, v, None)
        }
        None => {
            let (m, v) = (&gt * f1, gt.square() * f2);
            let wrap = |t: &tch::Tensor| Tensor::from_primitive::<LibTorch>(TchTensor::new(t.shallow_clone()));
            let fresh = (wrap(&m), wrap(&v));
            (m, v, Some(fresh))
        }
    };
    let (bc1, bc2) = (1.0 - h.beta1.powi(h.t), 1.0 - h.beta2.powi(h.t));
    // x decay - lr / bc1 * m / (sqrt(v / bc2) + eps), as x + m / denom with the sign and the
    // scale folded into denom.
    let mut denom = (v / bc2).sqrt();
    let _ = denom.g_add_scalar_(h.eps);
    let _ = denom.g_mul_scalar_(-bc1 / h.lr);
    let mut base = if h.decay != 1.0 { &px.tensor * h.decay } else { px.tensor.copy() };
    let _ = base.addcdiv_(&m.view(size.as_slice()), &denom.view(size.as_slice()));
    Some((Tensor::from_primitive::<LibTorch>(TchTensor::new(base)), fresh))
}

/// The sum of squares of LibTorch tensors `[1]`, as one norm kernel per tensor (PyTorch's own
/// launch cost rather than burn's per-op path); `None` when any tensor lives elsewhere.
pub fn sum_squares(all: &[Tensor<1>]) -> Option<Tensor<1>> {
    let norms = all
        .iter()
        .map(|g| g.clone().try_into_primitive::<LibTorch>().ok().map(|t| t.tensor.norm()))
        .collect::<Option<Vec<tch::Tensor>>>()?;
    if norms.is_empty() {
        return None;
    }
    let sq = tch::Tensor::stack(&norms, 0).square().sum(tch::Kind::Float).reshape([1]);
    Some(Tensor::from_primitive::<LibTorch>(TchTensor::new(sq)))
}

#[cfg(test)]
mod tests {
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

    /// Only tracked LibTorch tensors take the fused path.
    #[test]
    fn other_backends_get_their_tensors_back() {
        let q = Tensor::<4>::zeros([1, 1, 2, 4], &Device::flex().autodiff());
        assert!(super::causal(q.clone(), q.clone(), q).is_err());
    }
}
