//! The CPU (burn-flex) route's fast paths behind our seams, each tested against the reference
//! path it replaces (tests.rs):
//! - [`kd_closed_form`]: the KD loss's closed-form chunk, one pass per row (kd.rs);
//! - [`rope_attention`]: causal GQA attention with RoPE, forward and backward (attention.rs),
//!   and [`grouped`]: the same on rotated heads whose queries follow cached keys (decoding);
//! - [`rms_norm`]: RMSNorm forward and backward, one pass per row (norm.rs);
//! - [`silu_mul`]: SwiGLU's `silu(gate) * up`, forward and backward in one pass (swiglu.rs);
//!
//! Why: at the P4 shapes burn-flex's matmul (the `gemm` crate, AVX-512 with the `x86-v4`
//! feature) runs at PyTorch's speed, but everything between the matmuls is a chain of
//! single-purpose kernels, each allocating a fresh output (page faults were 12% of a step) and
//! many on one thread, with libm's scalar `expf` (10%). These paths do the same arithmetic in
//! one parallel pass with a vectorized `exp` (simd.rs). Only plain f32 Flex tensors take them;
//! anything else comes back unchanged for the reference path.

// The fast paths hand their inputs back (tensor handles, a few words each) when they do not
// apply: nothing worth boxing.
#![allow(clippy::result_large_err)]

pub mod attention;
pub mod kd;
pub mod norm;
mod op;
pub mod simd;
pub mod swiglu;

pub use attention::{grouped, rope_attention};
pub use norm::rms_norm;
pub use swiglu::silu_mul;

use burn::tensor::{Int, Tensor};
use burn_flex::Flex;

use op::{flex, plain_f32, values};

/// [`kd::closed_form`] on plain Flex f32 tensors: student logits `s` `[n, v]`, teacher logits
/// `t` (optional, `[n, v]`), labels `tgt` `[n, 1]`, row weights `w` `[n]`. Returns the weighted
/// CE and KL sums (`[1]`) and `dL/ds`; `None` (nothing computed) for another backend or dtype.
pub fn kd_closed_form(
    s: &Tensor<2>,
    t: Option<&Tensor<2>>,
    tgt: &Tensor<2, Int>,
    w: &Tensor<1>,
    alpha: f64,
    tau: f64,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<2>)> {
    let [n, v] = s.dims();
    let ps = plain_f32(s)?;
    let pt = match t {
        Some(t) => Some(plain_f32(t)?),
        None => None,
    };
    let pw = plain_f32(w)?;
    let labels: Vec<usize> = tgt.clone().into_data().iter::<i64>().map(|y| y as usize).collect();
    // An out-of-range label is the reference path's error to report (gather), not ours to read.
    if labels.len() != n || labels.iter().any(|&y| y >= v) {
        return None;
    }
    let hyper = kd::Hyper { alpha: alpha as f32, tau: tau as f32 };
    let out = kd::closed_form(values(&ps), pt.as_ref().map(values), &labels, values(&pw), v, hyper);
    let scalar = |x: f64| Tensor::from_primitive::<Flex>(flex(vec![x as f32], &[1]));
    Some((scalar(out.ce), scalar(out.kl), Tensor::from_primitive::<Flex>(flex(out.grad, &[n, v]))))
}

#[cfg(test)]
mod tests;
