//! Exports of a trained student. One file per format.

use serde::{Deserialize, Serialize};

pub mod native;

/// The weight formats `distill export` writes (`export.formats`, `--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Symmetric per-output-channel int8 weights + f32 scales, in safetensors.
    Int8,
    /// Plain f32 safetensors.
    F32,
}
