//! The decoder family shared by teacher and student: token embedding, a stack of pre-norm
//! blocks (RMSNorm -> GQA attention with RoPE -> RMSNorm -> SwiGLU), final RMSNorm, LM head.

pub mod approx_attention;
pub mod attention;
pub mod config;
pub mod decoder;
pub mod hidden_proj;
pub mod init;
pub mod linear;
pub mod mamba;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod prune;
pub mod qkv_file;
pub mod rope;
pub mod store;

pub use config::{MambaShape, ModelShape, RopeScaling};
pub use decoder::{Decoder, DecoderConfig, number_params};

use std::sync::Arc;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// Packed documents (`data.packing = "documents"`), or left-padded rows being generated: each
/// token's position within its own sequence, `[b, t]` row-major, for `t` tokens that follow
/// `start` cached ones. A token attends only to its sequence (the `pos` tokens before it and
/// itself), and RoPE rotates it by that position. A left pad is a sequence of one token.
#[derive(Debug, Clone)]
pub struct DocPositions {
    pub pos: Arc<Vec<u32>>,
    pub b: usize,
    pub t: usize,
    /// Keys before the first token (a generation cache); 0 in training.
    pub start: usize,
    /// Left pads per row in generation (empty in training).
    pub pads: Vec<usize>,
}

impl DocPositions {
    /// Panics unless `pos` has `b * t` entries and none reaches before its row.
    pub fn new(pos: Vec<u32>, b: usize, t: usize) -> Self {
        Self::after(pos, b, t, 0)
    }

    /// Positions of `t` tokens per row after `start` cached ones.
    pub fn after(pos: Vec<u32>, b: usize, t: usize, start: usize) -> Self {
        assert_eq!(pos.len(), b * t, "one position per token");
        assert!((0..b * t).all(|i| pos[i] as usize <= start + i % t), "a sequence starts within its row");
        DocPositions { pos: Arc::new(pos), b, t, start, pads: Vec::new() }
    }

    /// The positions of columns `start..start + t` of rows left-padded by `pads` tokens: a pad
    /// is its own sequence (position 0), a real token is at its column less the row's pads.
    pub fn left_padded(pads: &[usize], start: usize, t: usize) -> Self {
        let pos = pads
            .iter()
            .flat_map(|&p| (start..start + t).map(move |c| if c < p { 0 } else { (c - p) as u32 }))
            .collect();
        DocPositions { pads: pads.to_vec(), ..Self::after(pos, pads.len(), t, start) }
    }

    /// Whether token `i` of row `r` (of this call) is a left pad.
    pub fn is_pad(&self, r: usize, i: usize) -> bool {
        self.pads.get(r).is_some_and(|&p| self.start + i < p)
    }

    /// `[b, 1, t, start + t]`: true where query i may not see key j (later, another sequence,
    /// or outside a `window`).
    pub fn hidden(&self, window: Option<usize>, device: &Device) -> Tensor<4, Bool> {
        let (b, t, s) = (self.b, self.t, self.start + self.t);
        let mut m = Vec::with_capacity(b * t * s);
        for bi in 0..b {
            for i in 0..t {
                let at = self.start + i;
                let mut first = at - self.pos[bi * t + i] as usize;
                if let Some(w) = window {
                    first = first.max((at + 1).saturating_sub(w));
                }
                m.extend((0..s).map(|j| j > at || j < first));
            }
        }
        Tensor::from_data(TensorData::new(m, [b, 1, t, s]), device)
    }
}

/// Token ids as a (1, len) model input.
pub fn token_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|v| *v as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}
