//! The RMSNorm seam: every normalization of the model goes through [`rms_norm`], the one place a
//! fused kernel plugs in (PyTorch's fused RMSNorm forward and backward on the LibTorch route:
//! one kernel where burn's composition runs eight, each reading the activations again; on the
//! CPU route, one parallel pass per row each way).

use burn::nn::RmsNorm;
use burn::tensor::Tensor;

/// `x / sqrt(mean(x^2) + eps) * gamma` over the last dimension, the statistics in f32.
pub fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    let x = match crate::kernels::torch::rms_norm(x, norm.gamma.val(), norm.epsilon) {
        Ok(y) => return y,
        Err((x, _)) => x,
    };
    let x = match crate::kernels::cpu::rms_norm(x, norm.gamma.val(), norm.epsilon) {
        Ok(y) => return y,
        Err((x, _)) => x,
    };
    norm.forward(x)
}
