//! The LibTorch route's fast paths behind our seams (cargo feature `tch`), each tested against
//! the reference path it replaces:
//! - [`flash`] (flash.rs): cuDNN's fused attention and FlashAttention-2, forward and backward
//!   called directly, bf16/f16 on CUDA: causal, sliding windows, GQA in place, queries after
//!   cached keys;
//! - [`causal`]: causal attention under autodiff, as one burn autodiff op over PyTorch's fused
//!   scaled-dot-product attention (what [`flash`] does not take: f32, memory-efficient);
//! - [`causal_gqa_untracked`]: the frozen teacher's attention with SDPA's own GQA;
//! - [`rms_norm`]: PyTorch's fused RMSNorm, forward and backward (one kernel each way where
//!   burn's composition runs eight);
//! - [`given_grads`], [`add_matmul_tn`]: the fused LM-head loss's dW, accumulated in place and
//!   handed to autodiff as the head's gradient;
//! - [`topk_tail_sums`]: the teacher cache's top-k and tail sums on the device;
//! - [`flat_adamw`], [`adamw_update`], [`sum_squares`] (adam.rs): the optimizer.
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
use burn_autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn_tch::{LibTorch, TchTensor};

type Ad = Autodiff<LibTorch>;

/// A PyTorch function as one burn autodiff op: the forward runs under PyTorch's autograd on
/// detached leaves of burn's tensors (views: nothing is copied), and the backward asks PyTorch's
/// autograd for the vector-Jacobian product, so the fused backward kernels PyTorch has for the
/// function (SDPA's flash backward, RMSNorm's fused backward) do the work.
#[derive(Debug)]
struct TorchFn;

/// PyTorch's view of the forward: the leaves (requiring grad) and the output with its history.
#[derive(Debug, Clone)]
struct Saved {
    inputs: Vec<TchTensor>,
    out: TchTensor,
}

impl<const N: usize> Backward<LibTorch, N> for TorchFn {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let Saved { inputs, out } = ops.state;
        // d(sum(out * g))/dx is the vector-Jacobian product with g: tch has no `backward(grad)`,
        // so this probe costs one multiply and one sum more than PyTorch's own autograd.
        let probe = (&out.tensor * grad.tensor.detach()).sum(out.tensor.kind());
        let leaves: Vec<&tch::Tensor> = inputs.iter().map(|t| &t.tensor).collect();
        let dx = tch::Tensor::run_backward(&[probe], &leaves, false, false);
        for (node, d) in ops.parents.into_iter().zip(dx) {
            if let Some(node) = node {
                grads.register::<LibTorch>(node.id, TchTensor::new(d));
            }
        }
    }
}

/// A tracked LibTorch tensor split into what [`torch_fn`] needs.
struct Tracked {
    node: NodeGuard,
    prim: TchTensor,
}

fn tracked<const D: usize>(x: &Tensor<D>) -> Option<Tracked> {
    let p = x.clone().try_into_primitive::<Ad>().ok()?;
    Some(Tracked { node: p.node(), prim: p.primitive().clone() })
}

/// `f` of the inputs as one burn autodiff op (see [`TorchFn`]).
fn torch_fn<const N: usize, const D: usize>(
    inputs: [Tracked; N],
    f: impl FnOnce(&[tch::Tensor]) -> tch::Tensor,
) -> Tensor<D> {
    // The leaves and the output share burn's storage handles: while PyTorch keeps them for the
    // backward, burn sees the storage shared and never reuses it in place (which PyTorch would
    // refuse at the backward: "modified by an inplace operation").
    let share = |tensor: tch::Tensor, of: &TchTensor| TchTensor { tensor, storage: of.storage.clone() };
    let leaves: Vec<TchTensor> =
        inputs.iter().map(|t| share(t.prim.tensor.detach().set_requires_grad(true), &t.prim)).collect();
    let tensors: Vec<tch::Tensor> = leaves.iter().map(|t| t.tensor.shallow_clone()).collect();
    let out = TchTensor::new(f(&tensors));
    let value = share(out.tensor.detach(), &out);
    let nodes = inputs.map(|t| t.node);
    let prim = match TorchFn.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(Saved { inputs: leaves, out }, value),
        OpsKind::UnTracked(prep) => prep.finish(value),
    };
    Tensor::from_primitive::<Ad>(prim)
}

/// Full causal attention (`q`, `k`, `v`: `[batch, heads, seq, head_dim]`, the same head count)
/// through PyTorch's fused kernels when the tensors are tracked LibTorch tensors; otherwise the
/// inputs come back unchanged for the reference path.
pub fn causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let (Some(tq), Some(tk), Some(tv)) = (tracked(&q), tracked(&k), tracked(&v)) else {
        return Err([q, k, v]);
    };
    Ok(torch_fn([tq, tk, tv], |x| {
        tch::Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], None::<tch::Tensor>, 0.0, true, None, false)
    }))
}

/// RMSNorm of `x` over its last dimension with gain `gamma`, through PyTorch's fused kernels
/// (forward and backward; computed in f32 whatever the input's precision) when the tensors are
/// LibTorch tensors, tracked or plain; otherwise the inputs come back unchanged.
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Result<Tensor<D>, (Tensor<D>, Tensor<1>)> {
    let d = gamma.dims()[0] as i64;
    if let (Some(tx), Some(tg)) = (tracked(&x), tracked(&gamma)) {
        return Ok(torch_fn([tx, tg], |a| a[0].rms_norm([d], Some(&a[1]), eps)));
    }
    let (Ok(px), Ok(pg)) = (x.clone().try_into_primitive::<LibTorch>(), gamma.clone().try_into_primitive::<LibTorch>())
    else {
        return Err((x, gamma));
    };
    let (y, _rstd) = px.tensor.internal_fused_rms_norm([d], Some(&pg.tensor), eps);
    Ok(Tensor::from_primitive::<LibTorch>(TchTensor::new(y)))
}

/// Full causal grouped-query attention of plain (untracked) LibTorch tensors, `k`/`v` with
/// fewer heads than `q`, through SDPA's own GQA; anything else comes back unchanged.
pub fn causal_gqa_untracked(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let Some([pq, pk, pv]) = plain_qkv(&q, &k, &v) else {
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

/// q, k and v as plain (untracked) LibTorch tensors, when all three are.
fn plain_qkv(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> Option<[TchTensor; 3]> {
    let p = |x: &Tensor<4>| x.clone().try_into_primitive::<LibTorch>().ok();
    Some([p(q)?, p(k)?, p(v)?])
}

/// A scalar zero whose gradients with respect to its inputs are given (times the gradient that
/// reaches the scalar): how the fused LM-head loss hands the dH and dW it computed in its chunks
/// to autodiff. The reference path spells the same thing as the surrogate `sum(H * dH) +
/// sum(W * dW)`, whose product and gradient each hold another `[vocab, hidden]`; here the
/// given dW itself becomes the head's gradient, scaled in place.
#[derive(Debug)]
struct GivenGrads;

impl Backward<LibTorch, 2> for GivenGrads {
    type State = [TchTensor; 2];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let up = grads.consume::<LibTorch>(&ops.node);
        for (node, mut g) in ops.parents.into_iter().zip(ops.state) {
            if let Some(node) = node {
                let _ = g.tensor.g_mul_(&up.tensor.to_kind(g.tensor.kind()));
                grads.register::<LibTorch>(node.id, g);
            }
        }
    }
}

/// `[1]` zero with the given gradients `(d_a, d_b)` for tracked LibTorch tensors `a`, `b` (see
/// [`GivenGrads`]); the inputs back when they live elsewhere.
#[allow(clippy::type_complexity)]
pub fn given_grads(
    a: Tensor<2>,
    b: Tensor<2>,
    da: Tensor<2>,
    db: Tensor<2>,
) -> Result<Tensor<1>, (Tensor<2>, Tensor<2>, Tensor<2>, Tensor<2>)> {
    let (Some(ta), Some(tb), Ok(pa), Ok(pb)) = (
        tracked(&a),
        tracked(&b),
        da.clone().try_into_primitive::<LibTorch>(),
        db.clone().try_into_primitive::<LibTorch>(),
    ) else {
        return Err((a, b, da, db));
    };
    let zero = TchTensor::new(tch::Tensor::zeros([1], (tch::Kind::Float, pa.tensor.device())));
    let prim = match GivenGrads.prepare::<NoCheckpointing>([ta.node, tb.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish([pa, pb], zero),
        OpsKind::UnTracked(prep) => prep.finish(zero),
    };
    Ok(Tensor::from_primitive::<Ad>(prim))
}

/// `acc += a^T b` in f32, in place, for plain LibTorch `a` `[k, m]` and `b` `[k, n]` of one
/// dtype; made on the first call. f32 inputs are one GEMM into the accumulator (no `[m, n]`
/// product besides it); bf16 ones add a bf16 product (half the accumulator's size: `addmm`
/// wants one dtype, and its mixed-output variant is CUDA-only and throws, slowly, elsewhere).
/// `false` when the tensors live elsewhere.
pub fn add_matmul_tn(acc: &mut Option<Tensor<2>>, a: &Tensor<2>, b: &Tensor<2>) -> bool {
    let (Ok(pa), Ok(pb)) = (a.clone().try_into_primitive::<LibTorch>(), b.clone().try_into_primitive::<LibTorch>())
    else {
        return false;
    };
    let f = tch::Kind::Float;
    let (at, b) = (pa.tensor.tr(), &pb.tensor);
    let sum = match acc.take().map(|t| t.try_into_primitive::<LibTorch>()) {
        None => at.mm(b).to_kind(f),
        Some(Ok(mut s)) => {
            let _ = match at.kind() == f {
                true => s.tensor.addmm_(&at, b),
                false => s.tensor.g_add_(&at.mm(b)),
            };
            s.tensor
        }
        Some(Err(_)) => return false,
    };
    *acc = Some(Tensor::from_primitive::<LibTorch>(TchTensor::new(sum)));
    true
}

/// Whether `t` is a LibTorch tensor under autodiff.
pub fn is_tracked<const D: usize>(t: &Tensor<D>) -> bool {
    tracked(t).is_some()
}

/// Whether `t` is a plain LibTorch tensor (what the fused paths below take).
pub fn is_libtorch<const D: usize>(t: &Tensor<D>) -> bool {
    t.clone().try_into_primitive::<LibTorch>().is_ok()
}

/// The teacher cache's device work on logits `z` `[n, vocab]` (plain LibTorch): the top `kk`
/// values (in `z`'s dtype: the host converts them) and ids (i32: half the read-back of i64),
/// largest first, and per temperature `tau` the f32 sum of `exp((z - top) / tau)` over the
/// entries strictly below the `k`-th largest value, `[n, temps]`. Eight kernels on f32
/// `[n, vocab]` where burn's composition casts to f64 and runs twice as many; f32 is enough for
/// a sum of terms in (0, 1] (the host adds the candidates' part in f64). `None` for another
/// backend.
pub fn topk_tail_sums(
    z: &Tensor<2>,
    k: usize,
    kk: usize,
    temps: &[f64],
) -> Option<(Tensor<2>, Tensor<2, burn::tensor::Int>, Tensor<2>)> {
    let pz = z.clone().try_into_primitive::<LibTorch>().ok()?;
    let z = &pz.tensor;
    let f = tch::Kind::Float;
    let (vals, idx) = z.topk(kk as i64, 1, true, true);
    let (top, kth) = (vals.narrow(1, 0, 1).to_kind(f), vals.narrow(1, k as i64 - 1, 1));
    // z - top in f32 in one kernel (a bf16 z is promoted as it is read), the kept and tied
    // entries sent to -inf.
    let mut d = z - &top;
    let _ = d.masked_fill_(&z.greater_equal_tensor(&kth), f64::NEG_INFINITY);
    let cols: Vec<tch::Tensor> =
        temps.iter().map(|&tau| (&d * (1.0 / tau)).exp().sum_dim_intlist([1i64].as_slice(), true, f)).collect();
    let wrap = |t: tch::Tensor| Tensor::<2>::from_primitive::<LibTorch>(TchTensor::new(t));
    Some((
        wrap(vals),
        Tensor::<2, burn::tensor::Int>::from_primitive::<LibTorch>(TchTensor::new(idx.to_kind(tch::Kind::Int))),
        wrap(tch::Tensor::cat(&cols, 1)),
    ))
}

mod adam;
pub use adam::*;
mod flash;
pub use flash::{GpuKernel, flash, kernel_for, with_kernels};
mod varlen;
pub use varlen::flash_documents;

#[cfg(test)]
mod tests;
