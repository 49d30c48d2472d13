//! Minitron-style structured pruning: a trained attention decoder (the teacher) cut down to a
//! smaller student of the same family, as the starting point of distillation.
//!
//! One calibration pass ([`importance`]) scores every prunable unit from activations alone
//! (no gradients): whole blocks (ShortGPT block influence), FFN channels, query heads and
//! embedding channels. [`prune`] keeps the best-scoring units to reach a target
//! [`ModelShape`], slicing the teacher's tensors (Hugging Face names and layouts) and loading
//! the student from them, and returns a [`PrunePlan`] that records every kept index.

mod importance;
#[cfg(test)]
mod naive;
mod plot;
mod slice;
#[cfg(test)]
mod tests;

pub use importance::importance;
pub use plot::plot;
pub use slice::prune;

use serde::{Deserialize, Serialize};

use super::config::ModelShape;

/// Activation statistics of one calibration pass, per prunable unit; higher = more important.
/// Every mean is over all calibration tokens (all batches, all positions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    /// Per layer: 1 - mean cos(x_in, x_out), with x_in the residual stream entering the block
    /// and x_out the one leaving it (after attention and MLP): ShortGPT's block influence. A
    /// block that barely turns the stream scores near 0.
    pub block_influence: Vec<f64>,
    /// Per layer, per FFN channel c: mean |silu(gate(h))_c * up(h)_c|, h the block's
    /// post-attention residual after `post_attention_layernorm` (what the MLP reads).
    pub ffn: Vec<Vec<f64>>,
    /// Per layer, per query head: mean L2 norm of the head's attention output (softmax(qk) v,
    /// before o_proj), as NVIDIA ModelOpt / Minitron rank heads.
    pub heads: Vec<Vec<f64>>,
    /// Per d_model channel c: sum over layers l and over both of its RMSNorms n (the
    /// `input_layernorm` before attention and the `post_attention_layernorm` before the MLP)
    /// of mean |n_l(x)_c|. The final `model.norm` is not counted.
    pub embed: Vec<f64>,
    /// Calibration tokens seen (batch * sequence, summed over batches).
    pub tokens: usize,
}

/// How layers are chosen when `n_layers` shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthMethod {
    /// Drop the blocks with the lowest [`Importance::block_influence`].
    BlockInfluence,
    /// Keep the first `n_layers` blocks (drop the last ones).
    Last,
}

/// How channels and heads are chosen when widths shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WidthMethod {
    /// Keep the units with the largest activation statistics of [`Importance`].
    Activation,
}

/// Exactly what [`prune`] kept, as teacher indices in ascending order (so the student keeps
/// the teacher's layer, channel and head order). Per-layer lists follow `layers`: entry i
/// belongs to student layer i, teacher layer `layers[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    pub depth: DepthMethod,
    pub width: WidthMethod,
    /// The student's shape.
    pub shape: ModelShape,
    /// Teacher blocks kept.
    pub layers: Vec<usize>,
    /// Per kept layer: FFN channels kept (rows of gate/up, columns of down).
    pub ffn: Vec<Vec<usize>>,
    /// Per kept layer: KV groups kept (k/v heads).
    pub kv_groups: Vec<Vec<usize>>,
    /// Per kept layer: query heads kept (teacher head indices; all within `kv_groups`).
    pub heads: Vec<Vec<usize>>,
    /// d_model channels kept.
    pub embed: Vec<usize>,
}

/// The `k` indices with the largest scores, in ascending index order; ties go to the lower
/// index (a stable sort by descending score).
fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}
