//! `[student]`'s start: where its weights come from, which of them stay fixed, and how a pruned
//! student is cut from the teacher (`[student.prune]`).

use serde::{Deserialize, Serialize};

/// `student.init`: the student's first weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudentInit {
    /// Seeded random initialization of the shape under `[student.model]`.
    #[default]
    Random,
    /// A Hugging Face Llama/Qwen2 folder (`student.path`): shape and weights from its files.
    Hf,
    /// A llama.cpp GGUF file (`student.path`), dequantized to f32.
    Gguf,
    /// Cut from the teacher by importance (Minitron): `[student.model]` keys name the smaller
    /// widths and depth, every other key is the teacher's.
    Prune,
}

impl StudentInit {
    pub fn is_random(&self) -> bool {
        *self == StudentInit::Random
    }

    /// Loaded from files named by `student.path`.
    pub fn from_files(self) -> bool {
        matches!(self, StudentInit::Hf | StudentInit::Gguf)
    }
}

/// `[student.prune]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruneSection {
    /// Training rows of `data.seq_len` tokens the teacher scores importance on (one pass).
    pub calibration_rows: usize,
    /// Which layers go when `n_layers` shrinks: `block_influence` (ShortGPT: the blocks that
    /// change their input least) or `last`.
    pub depth: crate::model::prune::DepthMethod,
    /// How channels, heads and FFN neurons are ranked when widths shrink: `activation`
    /// (mean activation magnitudes, as NVIDIA ModelOpt ranks them).
    pub width: crate::model::prune::WidthMethod,
}

impl Default for PruneSection {
    fn default() -> Self {
        PruneSection {
            calibration_rows: 512,
            depth: crate::model::prune::DepthMethod::BlockInfluence,
            width: crate::model::prune::WidthMethod::Activation,
        }
    }
}
