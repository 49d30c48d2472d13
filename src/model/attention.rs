//! Grouped-query causal self-attention. MHA (n_kv_heads = n_heads), GQA and MQA
//! (n_kv_heads = 1) are one module; the kernel is behind [`causal_attention`] so that a fused
//! training kernel can replace it without touching the model.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use super::rope;

#[derive(Module, Debug)]
pub struct Attention {
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn new(d_model: usize, n_heads: usize, n_kv_heads: usize, device: &Device) -> Self {
        let head_dim = d_model / n_heads;
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Attention {
            wq: lin(d_model, n_heads * head_dim),
            wk: lin(d_model, n_kv_heads * head_dim),
            wv: lin(d_model, n_kv_heads * head_dim),
            wo: lin(n_heads * head_dim, d_model),
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    /// `x`: (batch, seq, d_model); `cos`/`sin`: RoPE tables (seq, head_dim).
    pub fn forward(&self, x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let split = |y: Tensor<3>, heads: usize| {
            y.reshape([b, t, heads, self.head_dim]).swap_dims(1, 2)
        };
        let q = rope::apply(split(self.wq.forward(x.clone()), self.n_heads), cos, sin);
        let k = rope::apply(split(self.wk.forward(x.clone()), self.n_kv_heads), cos, sin);
        let v = split(self.wv.forward(x), self.n_kv_heads);
        let y = causal_attention(q, k, v);
        let y = y.swap_dims(1, 2).reshape([b, t, self.n_heads * self.head_dim]);
        self.wo.forward(y)
    }
}

/// Repeat each KV head `n_rep` times: (b, kv, t, d) -> (b, kv * n_rep, t, d), head j of the
/// result reading KV head j / n_rep, as in Llama's `repeat_kv`.
pub fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, n_rep, t, d]).reshape([b, kv * n_rep, t, d])
}

/// Causal scaled-dot-product attention with grouped KV heads.
/// `q`: (b, n_heads, t, d); `k`, `v`: (b, n_kv_heads, t, d); returns (b, n_heads, t, d).
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let n_rep = q.dims()[1] / k.dims()[1];
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), None, None, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// softmax(q k^T / sqrt(d) + causal mask) v with KV head h / (H / KV), in plain f64 loops.
    fn naive(q: &[f32], k: &[f32], v: &[f32], b: usize, h: usize, kv: usize, t: usize, d: usize) -> Vec<f32> {
        let mut out = vec![0f32; b * h * t * d];
        let scale = 1.0 / (d as f64).sqrt();
        for bi in 0..b {
            for hi in 0..h {
                let ki = hi / (h / kv);
                for i in 0..t {
                    let qrow = &q[((bi * h + hi) * t + i) * d..][..d];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let krow = &k[((bi * kv + ki) * t + j) * d..][..d];
                            qrow.iter().zip(krow).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    for (j, s) in scores.iter().enumerate() {
                        let p = (s - m).exp() / z;
                        let vrow = &v[((bi * kv + ki) * t + j) * d..][..d];
                        for c in 0..d {
                            out[((bi * h + hi) * t + i) * d + c] += (p * vrow[c] as f64) as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn check(h: usize, kv: usize) {
        let dev = Device::flex();
        let (b, t, d) = (2, 7, 8);
        let q = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let data = |x: &Tensor<4>| -> Vec<f32> { x.clone().into_data().try_to_vec::<f32>().unwrap() };
        let want = naive(&data(&q), &data(&k), &data(&v), b, h, kv, t, d);
        let got = data(&causal_attention(q, k, v));
        let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "h={h} kv={kv}: max abs error {err}");
    }

    #[test]
    fn attention_matches_naive_mha() {
        check(4, 4);
    }
    #[test]
    fn attention_matches_naive_gqa() {
        check(4, 2);
    }
    #[test]
    fn attention_matches_naive_mqa() {
        check(4, 1);
    }

    /// The same check through the autodiff device, which takes burn's non-fused path.
    #[test]
    fn attention_matches_under_autodiff() {
        let dev = Device::flex().autodiff();
        let q = Tensor::<4>::random([1, 4, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([1, 2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([1, 2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let data = |x: &Tensor<4>| -> Vec<f32> { x.clone().into_data().try_to_vec::<f32>().unwrap() };
        let want = naive(&data(&q), &data(&k), &data(&v), 1, 4, 2, 5, 8);
        let got = data(&causal_attention(q, k, v));
        let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "max abs error {err}");
    }
}
