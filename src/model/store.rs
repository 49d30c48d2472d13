//! A frozen model on disk: `model.json` (the shape and vocabulary size) beside `model.bpk`
//! (burnpack weights) and a SHA-256 of the weights, so a teacher directory is self-describing.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{Decoder, DecoderConfig};
use crate::error::{Error, Result};
use crate::util::{read_json, sha256_hex, write_json_atomic};

#[derive(Serialize, Deserialize)]
struct ModelJson {
    config: DecoderConfig,
    weights_sha256: String,
    tokenizer_sha256: String,
}

pub fn save(dir: &Path, model: &Decoder, tokenizer_hash: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let w = dir.join("model.bpk");
    model.clone().save_file(&w).map_err(|e| Error::runtime(format!("{}: {e}", w.display())))?;
    let bytes = std::fs::read(&w).map_err(|e| Error::runtime(format!("{}: {e}", w.display())))?;
    // model.json last: its presence marks a complete directory.
    write_json_atomic(&dir.join("model.json"), &ModelJson {
        config: model.config.clone(),
        weights_sha256: sha256_hex(&bytes),
        tokenizer_sha256: tokenizer_hash.to_string(),
    })
}

/// Load a frozen model; returns it with the hash of the tokenizer it was trained with.
pub fn load(dir: &Path, device: &Device) -> Result<(Decoder, String)> {
    let meta: ModelJson = read_json(&dir.join("model.json"))?;
    let w = dir.join("model.bpk");
    let bytes = std::fs::read(&w).map_err(|e| Error::input(format!("{}: {e}", w.display())))?;
    if sha256_hex(&bytes) != meta.weights_sha256 {
        return Err(Error::input(format!("{}: checksum does not match model.json: the file is corrupt", w.display())));
    }
    let record = ModuleRecord::load(&w).map_err(|e| Error::input(format!("{}: {e}", w.display())))?;
    let model = meta.config.init(0, device).load_record(record);
    Ok((model, meta.tokenizer_sha256))
}
