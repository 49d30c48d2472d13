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

/// A layer's input as an int8 runtime with dynamic per-token scales would see it (`[qat]
/// activations = "int8-dynamic"`): each row over the last dimension scaled by `max|x| / 127`,
/// rounded (half to even) and scaled back; the gradient passes straight through. `on = false`
/// returns `x` untouched.
pub fn act_quant<const D: usize>(x: Tensor<D>, on: bool) -> Tensor<D> {
    if !on {
        return x;
    }
    let xd = x.clone().detach();
    // An all-zero row has scale 0: dividing by the smallest normal keeps it zero, not NaN.
    let s = xd.clone().abs().max_dim(D - 1).div_scalar(127.0).clamp_min(f32::MIN_POSITIVE);
    let q = xd.clone().div(s.clone()).round().mul(s);
    // Forward: q; backward: the identity (`xd - x` is zero with gradient -1).
    q - (xd - x)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Against a per-row computation in f64: scale max|x| / 127, round half to even; an
    /// all-zero row stays zero; the gradient is the upstream one.
    #[test]
    fn act_quant_is_int8_per_token_with_a_straight_through_gradient() {
        let dev = Device::flex().autodiff();
        let rows: Vec<Vec<f32>> = vec![
            vec![1.0, -0.5, 0.25, 127.0],
            vec![0.0; 4],
            vec![3.3e-3, -1e-3, 2.54e-3, 0.0],
            vec![-2.0, 1.0, 0.0079, 0.5],
        ];
        let flat: Vec<f32> = rows.concat();
        let x = Tensor::<2>::from_data(TensorData::new(flat.clone(), [4, 4]), &dev).require_grad();
        let y = act_quant(x.clone(), true);
        let got: Vec<f32> = y.clone().into_data().iter::<f32>().collect();
        for (r, row) in rows.iter().enumerate() {
            let s = row.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0;
            for (c, v) in row.iter().enumerate() {
                let want = if s == 0.0 { 0.0 } else { (*v as f64 / s).round_ties_even() * s };
                assert!((got[r * 4 + c] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3), "{r},{c}");
            }
        }
        assert_ne!(got, flat, "values move to the int8 grid");
        let up: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let g = (y * Tensor::<2>::from_data(TensorData::new(up.clone(), [4, 4]), &dev)).sum().backward();
        assert_eq!(x.grad(&g).unwrap().into_data().iter::<f32>().collect::<Vec<_>>(), up);
        assert_eq!(act_quant(x.clone(), false).into_data().iter::<f32>().collect::<Vec<_>>(), flat);
    }
}
