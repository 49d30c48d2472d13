//! The decoder stack used for both teacher and student.

use burn::module::Module;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::attention::Attention;
use super::mlp::SwiGlu;
use super::rope;
use crate::recipe::ModelShape;

/// A shape plus the vocabulary size: everything needed to rebuild the model from disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    #[serde(flatten)]
    pub shape: ModelShape,
}

#[derive(Module, Debug)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub mlp_norm: RmsNorm,
    pub mlp: SwiGlu,
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub embed: Embedding,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub config: DecoderConfig,
}

impl DecoderConfig {
    /// Random initialization; call `device.seed(..)` first for a reproducible model.
    pub fn init(&self, device: &Device) -> Decoder {
        let s = &self.shape;
        let norm = || RmsNormConfig::new(s.d_model).with_epsilon(s.norm_eps).init(device);
        let blocks = (0..s.n_layers)
            .map(|_| Block {
                attn_norm: norm(),
                attn: Attention::new(s.d_model, s.n_heads, s.n_kv_heads, device),
                mlp_norm: norm(),
                mlp: SwiGlu::new(s.d_model, s.d_ff, device),
            })
            .collect();
        Decoder {
            embed: self.embedding_config().init(device),
            blocks,
            norm: norm(),
            lm_head: (!s.tie_embeddings).then(|| {
                LinearConfig::new(s.d_model, self.vocab_size).with_bias(false).init(device)
            }),
            config: self.clone(),
        }
    }

    /// A tied embedding is also the output projection: with burn's default N(0, 1) init the
    /// initial logits would have a standard deviation of sqrt(d_model), so scale it to 1.
    fn embedding_config(&self) -> EmbeddingConfig {
        let c = EmbeddingConfig::new(self.vocab_size, self.shape.d_model);
        if self.shape.tie_embeddings {
            c.with_initializer(Initializer::Normal { mean: 0.0, std: (self.shape.d_model as f64).powf(-0.5) })
        } else {
            c
        }
    }

    pub fn head_dim(&self) -> usize {
        self.shape.d_model / self.shape.n_heads
    }

    /// Parameters of the matmuls per token (embedding lookup excluded, LM head included),
    /// the `N` in the usual 6N FLOPs/token training estimate.
    pub fn matmul_params(&self) -> usize {
        let s = &self.shape;
        let hd = self.head_dim();
        let attn = s.d_model * hd * (2 * s.n_heads + 2 * s.n_kv_heads);
        let mlp = 3 * s.d_model * s.d_ff;
        s.n_layers * (attn + mlp) + s.d_model * self.vocab_size
    }

    /// KV-cache bytes per token in f32 across all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.shape.n_layers * self.shape.n_kv_heads * self.head_dim() * 4
    }
}

impl Decoder {
    /// `tokens`: (batch, seq) -> logits (batch, seq, vocab).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let c = &self.config;
        let (cos, sin) = rope::tables(t, 0, c.head_dim(), c.shape.rope_theta, &device);
        let mut x = self.embed.forward(tokens);
        for block in &self.blocks {
            x = x.clone() + block.attn.forward(block.attn_norm.forward(x), &cos, &sin);
            x = x.clone() + block.mlp.forward(block.mlp_norm.forward(x));
        }
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => {
                let [b, t, d] = x.dims();
                let w = self.embed.weight.val().transpose();
                x.reshape([b * t, d]).matmul(w).reshape([b, t, c.vocab_size])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tiny(tie: bool) -> DecoderConfig {
        DecoderConfig {
            vocab_size: 50,
            shape: ModelShape {
                d_model: 16, n_layers: 2, n_heads: 4, n_kv_heads: 2, d_ff: 32, max_seq_len: 64,
                rope_theta: 10_000.0, tie_embeddings: tie, norm_eps: 1e-5,
            },
        }
    }

    /// Causality of the whole stack: changing a later token never changes earlier logits.
    #[test]
    fn decoder_is_causal() {
        let dev = Device::flex();
        dev.seed(1);
        for tie in [false, true] {
            let m = tiny(tie).init(&dev);
            let a = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [1, 6]), &dev);
            let b = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 9, 7], [1, 6]), &dev);
            let la: Vec<f32> = m.forward(a).into_data().try_to_vec::<f32>().unwrap();
            let lb: Vec<f32> = m.forward(b).into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(la.len(), 6 * 50);
            for i in 0..4 * 50 {
                assert!((la[i] - lb[i]).abs() < 1e-5, "position {} changed", i / 50);
            }
            assert!((4 * 50..6 * 50).any(|i| (la[i] - lb[i]).abs() > 1e-4));
        }
    }
}
