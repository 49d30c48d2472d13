//! The decoder family shared by teacher and student: token embedding, a stack of pre-norm
//! blocks (RMSNorm -> GQA attention with RoPE -> RMSNorm -> SwiGLU), final RMSNorm, LM head.

pub mod attention;
pub mod config;
pub mod decoder;
pub mod hidden_proj;
pub mod init;
pub mod linear;
pub mod mamba;
pub mod mlp;
pub mod norm;
pub mod prune;
pub mod qkv_file;
pub mod rope;
pub mod store;

pub use config::{MambaShape, ModelShape, RopeScaling};
pub use decoder::{Decoder, DecoderConfig, number_params};

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Token ids as a (1, len) model input.
pub fn token_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|v| *v as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}
