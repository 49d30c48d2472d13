//! The shape of a decoder: plain serde data, written by the recipe (after merging its
//! `configs/*.toml` files), by the HF loader, and into every checkpoint's `model.json`.

use serde::{Deserialize, Serialize};

/// A fully specified decoder shape (vocabulary size comes from the tokenizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub tie_embeddings: bool,
    pub norm_eps: f64,
    /// Layer kinds, repeated to `n_layers`: `A` = GQA attention, `M` = Mamba-2, e.g. "AAAM".
    #[serde(default = "default_layer_pattern")]
    pub layer_pattern: String,
    /// Sliding attention window in tokens (each token sees itself and `window - 1` before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Bias on the q/k/v projections (Qwen2).
    #[serde(default)]
    pub qkv_bias: bool,
    /// Bias on the attention output projection too (HF Llama `attention_bias`: q, k, v and o).
    /// Set only by loaded teachers; skipped when false so existing model.json files stay as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub o_bias: bool,
    /// `window` applies to layers `window_from_layer..` only; lower ones attend fully
    /// (Qwen2's `max_window_layers`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_from_layer: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub mamba: MambaShape,
}

/// All-attention: the pattern of a shape that does not name one.
pub fn default_layer_pattern() -> String {
    "A".into()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ModelShape {
    /// The kind of layer `i`: the pattern repeated.
    pub fn layer_kind(&self, i: usize) -> char {
        let p = self.layer_pattern.as_bytes();
        p[i % p.len()] as char
    }

    /// The attention window of layer `i`, if it has one.
    pub fn window_of(&self, i: usize) -> Option<usize> {
        self.window.filter(|_| i >= self.window_from_layer)
    }
}

/// Llama-3 RoPE frequency scaling (`rope_scaling` with `rope_type = "llama3"` in HF configs):
/// long wavelengths are divided by `factor`, short ones kept, a smooth ramp in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub factor: f64,
    #[serde(default = "d_low_freq")]
    pub low_freq_factor: f64,
    #[serde(default = "d_high_freq")]
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

// Per-field defaults because `factor` and `original_max_position_embeddings` have none.
fn d_low_freq() -> f64 {
    1.0
}
fn d_high_freq() -> f64 {
    4.0
}

/// The Mamba-2 mixer of `M` layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MambaShape {
    /// SSM state size N per head.
    pub d_state: usize,
    /// Channels P per SSM head; heads = expand * d_model / head_dim.
    pub head_dim: usize,
    pub expand: usize,
    /// Width of the depthwise causal convolution.
    pub d_conv: usize,
    /// Groups of heads sharing B and C (like KV groups in GQA).
    pub n_groups: usize,
    /// Chunk length of the SSD training algorithm.
    pub chunk_size: usize,
}

impl Default for MambaShape {
    fn default() -> Self {
        MambaShape { d_state: 16, head_dim: 16, expand: 2, d_conv: 4, n_groups: 1, chunk_size: 32 }
    }
}
