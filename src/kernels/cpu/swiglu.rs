//! SwiGLU's gate, `h = silu(a) * b` with `silu(a) = a * sigmoid(a)`, forward and backward in
//! one parallel pass each (burn's composition: sigmoid through libm's scalar `expf`, then two
//! multiplies, each a full pass on one thread, and as many again backward).
//!
//! Backward: `da = dh b sigmoid(a) (1 + a (1 - sigmoid(a)))`, `db = dh silu(a)`.

use rayon::prelude::*;

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::op::{Args, flex, give, upstream, values};
use super::simd::{exp, simd_fn};

/// Elements per parallel task: big enough to amortize the task, small enough to balance.
const BLOCK: usize = 16 * 1024;

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

simd_fn! {
    fn gate(a: &[f32], b: &[f32], h: &mut [f32]) {
        for ((h, &a), &b) in h.iter_mut().zip(a).zip(b) {
            *h = a * sigmoid(a) * b;
        }
    }
}

simd_fn! {
    fn gate_grad(a: &[f32], b: &[f32], dh: &[f32], da: &mut [f32], db: &mut [f32]) {
        for i in 0..a.len() {
            let s = sigmoid(a[i]);
            da[i] = dh[i] * b[i] * (s * (1.0 + a[i] * (1.0 - s)));
            db[i] = dh[i] * (a[i] * s);
        }
    }
}

/// `silu(a) * b`, elementwise (`a`, `b` the same length).
pub fn forward(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut h = vec![0f32; a.len()];
    h.par_chunks_mut(BLOCK).zip(a.par_chunks(BLOCK).zip(b.par_chunks(BLOCK))).for_each(|(h, (a, b))| gate(a, b, h));
    h
}

/// `(da, db)` from the forward's inputs and the output's gradient `dh`.
pub fn backward(a: &[f32], b: &[f32], dh: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut da = vec![0f32; a.len()];
    let mut db = vec![0f32; a.len()];
    da.par_chunks_mut(BLOCK)
        .zip(db.par_chunks_mut(BLOCK))
        .zip(a.par_chunks(BLOCK).zip(b.par_chunks(BLOCK)).zip(dh.par_chunks(BLOCK)))
        .for_each(|((da, db), ((a, b), dh))| gate_grad(a, b, dh, da, db));
    (da, db)
}

/// The autodiff op: the state is the two inputs.
#[derive(Debug)]
struct Gate;

impl Backward<Flex, 2> for Gate {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (dh, [p0, p1]) = upstream(grads, &ops);
        let (a, b) = ops.state;
        let (da, db) = backward(values(&a), values(&b), values(&dh));
        give(grads, p0, || flex(da, a.layout().shape()));
        give(grads, p1, || flex(db, b.layout().shape()));
    }
}

/// `silu(a) * b` for f32 Flex tensors of one shape (plain or under autodiff); the inputs back
/// unchanged otherwise.
pub fn silu_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    let args = match a.dims() == b.dims() {
        true => Args::default().push(&a).and_then(|x| x.push(&b)),
        false => None,
    };
    let Some(args) = args else { return Err((a, b)) };
    let out = flex(forward(args.get(0), args.get(1)), &a.dims());
    let (at, bt) = (args.t[0].clone(), args.t[1].clone());
    Ok(args.finish(Gate, out, || (at, bt)))
}
