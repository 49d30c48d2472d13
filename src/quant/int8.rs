//! Symmetric per-output-channel int8: for each output channel c, `scale_c = max |w_c| / 127`,
//! `q = round(w / scale_c)` in [-127, 127], and `w ~ q * scale_c`.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};

use crate::model::Decoder;

/// Quantize a row-major `[rows, cols]` matrix with one scale per row.
pub fn quantize_rows(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        // An all-zero row keeps scale 1 so that dequantization stays exact (zeros).
        let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales.push(scale);
        q.extend(row.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8));
    }
    (q, scales)
}

pub fn dequantize_rows(q: &[i8], scales: &[f32], cols: usize) -> Vec<f32> {
    q.iter().enumerate().map(|(i, v)| *v as f32 * scales[i / cols]).collect()
}

/// An `[out, in]` matrix (output channels as rows) from burn's `[in, out]` linear weight.
pub fn linear_out_in(l: &Linear) -> (Vec<f32>, usize, usize) {
    let w = l.weight.val();
    let [din, dout] = w.dims();
    (w.transpose().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 weights"), dout, din)
}

fn fake_quant_linear(l: &mut Linear) {
    let (w, dout, din) = linear_out_in(l);
    let (q, s) = quantize_rows(&w, dout, din);
    let deq = dequantize_rows(&q, &s, din);
    let device = l.weight.val().device();
    let t = Tensor::<2>::from_data(TensorData::new(deq, [dout, din]), &device).transpose();
    l.weight = Param::from_tensor(t);
}

/// The model whose weights are replaced by their int8 round trip (embedding quantized per
/// token row; norms stay f32, as in the export).
pub fn fake_quant_model(model: &Decoder) -> Decoder {
    let mut m = model.clone();
    for b in &mut m.blocks {
        for l in b.linears_mut() {
            fake_quant_linear(l);
        }
    }
    if let Some(h) = &mut m.lm_head {
        fake_quant_linear(h);
    }
    let e = m.embed.weight.val();
    let [v, d] = e.dims();
    let device = e.device();
    let w: Vec<f32> = e.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 weights");
    let (q, s) = quantize_rows(&w, v, d);
    m.embed.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(dequantize_rows(&q, &s, d), [v, d]), &device));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_int8_known_values_and_error_bound() {
        let w = [0.5f32, -1.27, 0.0, 0.635, 0.0, 0.0, 0.0, 0.0, 2.54, 1.0, -0.001, 0.3];
        let (q, s) = quantize_rows(&w, 3, 4);
        assert_eq!(s.len(), 3);
        assert!((s[0] - 0.01).abs() < 1e-8 && s[1] == 1.0 && (s[2] - 0.02).abs() < 1e-8);
        assert_eq!(&q[..4], &[50, -127, 0, 64]); // 63.5 rounds away from zero
        assert_eq!(&q[4..8], &[0, 0, 0, 0]);
        assert_eq!(&q[8..], &[127, 50, 0, 15]);
        let d = dequantize_rows(&q, &s, 4);
        for (i, (a, b)) in w.iter().zip(&d).enumerate() {
            assert!((a - b).abs() <= s[i / 4] / 2.0 + 1e-7, "element {i}: {a} vs {b}");
        }
    }
}
