//! How a teacher cache stores its top-k logits, and what the top-k KL does with the rest of
//! the teacher's mass. Named by the recipe's `[cache]` section; kept apart from the cache's
//! reader and writer so both (and the benchmarks) share one definition.

use serde::{Deserialize, Serialize};

/// How the top-k logits of a cache are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueCodec {
    /// Raw logits in IEEE half precision.
    F16,
    /// Raw logits in bfloat16.
    Bf16,
    /// 8-, 6- or 4-bit codes of sqrt((top - z) / range) per token (top and range in f32).
    Q8,
    Q6,
    Q4,
}

impl ValueCodec {
    pub fn bits(self) -> u32 {
        match self {
            ValueCodec::F16 | ValueCodec::Bf16 => 16,
            ValueCodec::Q8 => 8,
            ValueCodec::Q6 => 6,
            ValueCodec::Q4 => 4,
        }
    }
    /// Highest code of a quantized codec.
    pub fn levels(self) -> Option<u32> {
        match self {
            ValueCodec::F16 | ValueCodec::Bf16 => None,
            q => Some((1 << q.bits()) - 1),
        }
    }
}

/// What the top-k KL does with the teacher's mass outside the kept entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TailMode {
    /// Renormalize the teacher's kept entries to sum to one.
    Renormalize,
    /// One extra "other" category holding the teacher's and the student's remaining mass.
    Other,
}
