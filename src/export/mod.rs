//! Exports of a trained student. One file per format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Decoder;
use crate::quant::fake_quant::Plan;

pub mod gguf;
pub mod gguf_load;
pub mod gguf_model;
pub mod native;

use gguf_model::GgufQuant;

/// The weight formats `distill export` writes (`export.formats`, `--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormat {
    /// Symmetric per-output-channel int8 weights + f32 scales, in safetensors.
    #[serde(rename = "int8")]
    Int8,
    /// 4-bit weights in safetensors: ggml's Q4_0 blocks (one f16 scale per 32 inputs), or the
    /// run's `int4-g<N>` groups (one f32 scale per N); the block linears, and the embedding
    /// table / LM head when `[qat]` quantizes them.
    #[serde(rename = "int4")]
    Int4,
    /// A transformers checkpoint: f32 `model.safetensors`, config.json, generation_config.json
    /// and tokenizer.json (`hf`, or `f32`).
    #[serde(rename = "hf", alias = "f32")]
    F32,
    /// GGUF for llama.cpp, block linears in f16.
    #[serde(rename = "gguf-f16")]
    GgufF16,
    /// GGUF, block linears in ggml's Q8_0.
    #[serde(rename = "gguf-q8_0")]
    GgufQ8_0,
    /// GGUF, block linears in ggml's Q4_0.
    #[serde(rename = "gguf-q4_0")]
    GgufQ4_0,
}

/// Write `model` in `format` into `dir`; returns the weights file and its size. `qat` (the
/// run's `[qat]`) says whether the int4 and GGUF files quantize the embedding table and LM
/// head too, and the int4 file's grouping, as the run trained them.
pub fn export(
    model: &Decoder,
    format: ExportFormat,
    qat: &Plan,
    dir: &Path,
    tokenizer_json: &Path,
) -> Result<(PathBuf, u64)> {
    if let Some(why) = model.config.shape.export_gap() {
        return Err(crate::Error::input(format!("cannot export this model: {why}")));
    }
    let gguf = |q: GgufQuant| gguf_model::export(model, q, qat, dir, tokenizer_json);
    match format {
        ExportFormat::Int8 | ExportFormat::Int4 | ExportFormat::F32 => {
            native::export(model, format, qat, dir, tokenizer_json)
        }
        ExportFormat::GgufF16 => gguf(GgufQuant::F16),
        ExportFormat::GgufQ8_0 => gguf(GgufQuant::Q8_0),
        ExportFormat::GgufQ4_0 => gguf(GgufQuant::Q4_0),
    }
}

/// An export read back as a model: a `.gguf` file, or an export folder (`hf`, `int8` or `int4`:
/// config.json + safetensors; quantized weights dequantized exactly).
pub fn open(path: &Path, device: &burn::tensor::Device) -> Result<Decoder> {
    if path.extension().is_some_and(|e| e == "gguf") {
        gguf_load::open(path, device)
    } else {
        Ok(crate::teacher::hf::load(path, device, burn::tensor::DType::F32)?.0)
    }
}
