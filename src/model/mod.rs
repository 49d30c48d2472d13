//! The decoder family shared by teacher and student: token embedding, a stack of pre-norm
//! blocks (RMSNorm -> GQA attention with RoPE -> RMSNorm -> SwiGLU), final RMSNorm, LM head.

pub mod attention;
pub mod init;
pub mod mamba;
pub mod decoder;
pub mod mlp;
pub mod rope;
pub mod store;

pub use decoder::{Decoder, DecoderConfig};
