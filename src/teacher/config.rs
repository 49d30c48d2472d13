//! The teacher's kinds, precisions and `[cache]` section, next to the code they configure (the
//! recipe's `[teacher]` section aggregates them, with the model shape and optimizer).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::codec::{TailMode, ValueCodec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherKind {
    /// Pretrain a teacher from `model` on the prepared data, then freeze it.
    Pretrain,
    /// Load a frozen teacher exported by an earlier run (`<run>/teacher/final`).
    Checkpoint,
    /// A Hugging Face Llama or Qwen2 folder: config.json, safetensors, tokenizer.json.
    Hf,
    /// A llama.cpp GGUF file (llama or qwen2), its tokenizer rebuilt from the file.
    Gguf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogitsSource {
    /// Teacher forward pass per batch, no autodiff graph.
    Online,
    /// Top-k logits precomputed by `distill cache-teacher` (built by `run` if missing).
    Cache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherDtype {
    F32,
    Bf16,
    F16,
}

impl TeacherDtype {
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            TeacherDtype::F32 => burn::tensor::DType::F32,
            TeacherDtype::Bf16 => burn::tensor::DType::BF16,
            TeacherDtype::F16 => burn::tensor::DType::F16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Logits kept per token.
    pub k: usize,
    pub values: ValueCodec,
    pub tail: TailMode,
    /// Cache directory (default `<run>/teacher_cache`); share one between student runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub rows_per_shard: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection { k: 32, values: ValueCodec::Q8, tail: TailMode::Other, path: None, rows_per_shard: 1024 }
    }
}
