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

use std::sync::Arc;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// Packed documents (`data.packing = "documents"`): each token's position within its own
/// document, `[b, t]` row-major. A token attends only to its document (the `pos` tokens before
/// it and itself), and RoPE rotates it by that position.
#[derive(Debug, Clone)]
pub struct DocPositions {
    pub pos: Arc<Vec<u32>>,
    pub b: usize,
    pub t: usize,
}

impl DocPositions {
    /// Panics unless `pos` has `b * t` entries and none reaches before its row.
    pub fn new(pos: Vec<u32>, b: usize, t: usize) -> Self {
        assert_eq!(pos.len(), b * t, "one position per token");
        assert!((0..b * t).all(|i| pos[i] as usize <= i % t), "a document starts within its row");
        DocPositions { pos: Arc::new(pos), b, t }
    }

    /// `[b, 1, t, t]`: true where query i may not see key j (later, another document, or
    /// outside a `window`).
    pub fn hidden(&self, window: Option<usize>, device: &Device) -> Tensor<4, Bool> {
        let (b, t) = (self.b, self.t);
        let mut m = Vec::with_capacity(b * t * t);
        for bi in 0..b {
            for i in 0..t {
                let mut first = i - self.pos[bi * t + i] as usize;
                if let Some(w) = window {
                    first = first.max((i + 1).saturating_sub(w));
                }
                m.extend((0..t).map(|j| j > i || j < first));
            }
        }
        Tensor::from_data(TensorData::new(m, [b, 1, t, t]), device)
    }
}

/// Token ids as a (1, len) model input.
pub fn token_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|v| *v as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}
