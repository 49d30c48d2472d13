//! burn autodiff plumbing for the CPU fast paths: gather the inputs (plain Flex tensors, or
//! `Autodiff<Flex>` ones with their graph nodes), and hand the output back as one autodiff op
//! whose backward is ours ([`Backward`] over the inner Flex tensors).

use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

pub(super) type Ad = Autodiff<Flex>;

/// The inputs of one fast path: contiguous f32 Flex storage each, and their autodiff nodes
/// when they are `Autodiff<Flex>` tensors (all or none: burn never mixes the two in one op).
#[derive(Default)]
pub(super) struct Args {
    pub t: Vec<FlexTensor>,
    nodes: Vec<NodeGuard>,
}

impl Args {
    /// Adds `x`; `None` when it is not f32 on Flex (the caller takes the reference path).
    pub fn push<const D: usize>(mut self, x: &Tensor<D>) -> Option<Self> {
        if x.dtype() != DType::F32 {
            return None;
        }
        let prim = match x.clone().try_into_primitive::<Ad>() {
            Ok(p) => {
                if self.nodes.len() != self.t.len() {
                    return None;
                }
                self.nodes.push(p.node());
                p.primitive().clone()
            }
            Err(_) => {
                if !self.nodes.is_empty() {
                    return None;
                }
                x.clone().try_into_primitive::<Flex>().ok()?
            }
        };
        self.t.push(contiguous(prim));
        Some(self)
    }

    /// The f32 values of input `i`.
    pub fn get(&self, i: usize) -> &[f32] {
        values(&self.t[i])
    }

    /// `out` as the op's result: plain for plain inputs; for autodiff inputs, one op whose
    /// backward is `op` with the state `state()` (built only when a gradient is wanted).
    pub fn finish<O: Backward<Flex, N>, const N: usize, const D: usize>(
        self,
        op: O,
        out: FlexTensor,
        state: impl FnOnce() -> O::State,
    ) -> Tensor<D> {
        if self.nodes.is_empty() {
            return Tensor::from_primitive::<Flex>(out);
        }
        let nodes: [NodeGuard; N] = self.nodes.try_into().unwrap_or_else(|_| panic!("{N} inputs"));
        let prim = match op.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive::<Ad>(prim)
    }
}

/// `t` itself when its storage is contiguous, else a contiguous copy.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

/// The contiguous f32 storage of a plain (not autodiff) Flex f32 tensor.
pub(super) fn plain_f32<const D: usize>(x: &Tensor<D>) -> Option<FlexTensor> {
    if x.dtype() != DType::F32 {
        return None;
    }
    Some(contiguous(x.clone().try_into_primitive::<Flex>().ok()?))
}

/// The f32 values of a contiguous Flex tensor (what [`Args`] and [`flex`] hold).
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// A contiguous Flex f32 tensor of `shape` holding `v`.
pub(super) fn flex(v: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.to_vec()))
}

/// The gradient reaching an op's output (contiguous f32), and which parents want theirs.
pub(super) fn upstream<S, const N: usize>(grads: &mut Gradients, ops: &Ops<S, N>) -> (FlexTensor, [Option<NodeId>; N]) {
    let g = contiguous(grads.consume::<Flex>(&ops.node));
    (g, ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id)))
}

/// Registers `g` as the gradient of parent `p`, when that parent wants one.
pub(super) fn give(grads: &mut Gradients, p: Option<NodeId>, g: impl FnOnce() -> FlexTensor) {
    if let Some(id) = p {
        grads.register::<Flex>(id, g());
    }
}
