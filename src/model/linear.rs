//! The linear seam: every matrix product of the model goes through these two functions (the
//! projections of attention, SwiGLU and Mamba-2, and the LM head, tied or not). They are the
//! one place a faster kernel (cuBLAS / a fused GEMM on the GPU, a tuned GEMM on the CPU) plugs
//! in, without touching the layers.

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `x W^T + b` over the last dimension (burn stores `W` as `[d_in, d_out]`).
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    layer.forward(x)
}

/// Logits `(b, t, vocab)` from hidden states `(b, t, d)`: through an untied head, or the
/// transposed embedding `(vocab, d)` when the embeddings are tied.
pub fn lm_head(x: Tensor<3>, head: Option<&Linear>, embedding: &Tensor<2>) -> Tensor<3> {
    match head {
        Some(head) => linear(head, x),
        None => {
            let [b, t, d] = x.dims();
            let vocab = embedding.dims()[0];
            x.reshape([b * t, d]).matmul(embedding.clone().transpose()).reshape([b, t, vocab])
        }
    }
}
