//! RMSNorm forward and backward, one pass per row, rows in parallel. burn's composition runs
//! eight kernels forward (square, mean, add, sqrt, divide, multiply, ...) and more backward,
//! each over the whole activation; here a row stays in cache.
//!
//! `y = x / r * g` with `r = sqrt(mean(x^2) + eps)` (burn's `RmsNorm`, in that order), and
//! `dx = g dy / r - x sum(g dy x) / (d r^3)`, `dg = sum over rows of dy x / r`.

// simd_fn! compiles each body three times; the lint sees the copies too.
#![allow(clippy::too_many_arguments)]

use rayon::prelude::*;

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::op::{Args, flex, give, upstream, values};
use super::simd::{simd_fn, sum_of};

/// Rows per backward task: the gain's gradient is summed per block of this many rows, then
/// over blocks in order, so it is the same bits whatever the thread count.
const ROWS: usize = 32;

simd_fn! {
    fn row(x: &[f32], g: &[f32], eps: f32, y: &mut [f32]) -> f32 {
        let r = (sum_of(x, |_, v| v * v) / x.len() as f32 + eps).sqrt();
        for ((y, &x), &g) in y.iter_mut().zip(x).zip(g) {
            *y = x / r * g;
        }
        r
    }
}

simd_fn! {
    fn row_grad(x: &[f32], g: &[f32], r: f32, dy: &[f32], dx: &mut [f32], dg: &mut [f32]) {
        let c = sum_of(x, |j, v| g[j] * dy[j] * v) / (x.len() as f32 * r * r * r);
        for j in 0..x.len() {
            dx[j] = g[j] * dy[j] / r - x[j] * c;
            dg[j] += dy[j] * x[j] / r;
        }
    }
}

/// `x`: rows of length `g.len()`. Returns `y` and `r` per row (what the backward needs).
pub fn forward(x: &[f32], g: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = g.len();
    let mut y = vec![0f32; x.len()];
    let r = y.par_chunks_mut(d).zip(x.par_chunks(d)).map(|(y, x)| row(x, g, eps, y)).collect();
    (y, r)
}

/// `dx` and `dg` from the forward's `x`, `g`, `r` and the output's gradient `dy`.
pub fn backward(x: &[f32], g: &[f32], r: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let d = g.len();
    let mut dx = vec![0f32; x.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(d * ROWS)
        .enumerate()
        .map(|(b, dx)| {
            let mut dg = vec![0f32; d];
            for (i, dx) in dx.chunks_mut(d).enumerate() {
                let n = b * ROWS + i;
                let rows = n * d..(n + 1) * d;
                row_grad(&x[rows.clone()], g, r[n], &dy[rows], dx, &mut dg);
            }
            dg
        })
        .collect();
    let mut dg = vec![0f32; d];
    for p in partials {
        for (a, b) in dg.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dg)
}

/// The autodiff op: the state is the input, the gain and `r` per row.
#[derive(Debug)]
struct RmsNorm;

impl Backward<Flex, 2> for RmsNorm {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (dy, [p0, p1]) = upstream(grads, &ops);
        let (x, g, r) = ops.state;
        let (dx, dg) = backward(values(&x), values(&g), &r, values(&dy));
        give(grads, p0, || flex(dx, x.layout().shape()));
        give(grads, p1, || flex(dg, g.layout().shape()));
    }
}

/// RMSNorm of `x` over its last dimension with gain `gamma` (f32 Flex tensors, plain or under
/// autodiff); the inputs back unchanged for any other backend or dtype.
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Result<Tensor<D>, (Tensor<D>, Tensor<1>)> {
    let Some(args) = Args::default().push(&x).and_then(|a| a.push(&gamma)) else {
        return Err((x, gamma));
    };
    let (y, r) = forward(args.get(0), args.get(1), eps as f32);
    let out = flex(y, &x.dims());
    let (xt, gt) = (args.t[0].clone(), args.t[1].clone());
    Ok(args.finish(RmsNorm, out, || (xt, gt, r)))
}
