//! A frozen model on disk: `model.json` (the shape and vocabulary size) beside `model.bpk`
//! (burnpack weights) and a SHA-256 of the weights, so a teacher directory is self-describing.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{Decoder, DecoderConfig};
use crate::error::{Error, Result};
use crate::util::{read_json, sha256_hex, write_atomic, write_json_atomic};

#[derive(Serialize, Deserialize)]
struct ModelJson {
    config: DecoderConfig,
    weights_sha256: String,
    tokenizer_sha256: String,
}

pub fn save(dir: &Path, model: &Decoder, tokenizer_hash: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let w = dir.join("model.bpk");
    // Serialized in memory and written like every other file (temporary file, fsync, rename):
    // burn's save_file writes in place, so a crash could leave a torn model.bpk.
    let bytes =
        model.clone().into_record().into_bytes().map_err(|e| Error::runtime(format!("{}: {e}", w.display())))?;
    write_atomic(&w, &bytes)?;
    // model.json last: its presence marks a complete directory.
    write_json_atomic(
        &dir.join("model.json"),
        &ModelJson {
            config: model.config.clone(),
            weights_sha256: sha256_hex(&bytes),
            tokenizer_sha256: tokenizer_hash.to_string(),
        },
    )
}

/// Load a frozen model; returns it with the hash of the tokenizer it was trained with.
/// model.json, its config checked: a hand-edited or damaged one must fail here, not divide by
/// zero while building.
fn read_meta(dir: &Path) -> Result<ModelJson> {
    let json = dir.join("model.json");
    let meta: ModelJson = read_json(&json)?;
    meta.config.validate().map_err(|e| Error::input(format!("{}: {e}", json.display())))?;
    Ok(meta)
}

/// The model a saved model's model.json describes (its weights not read).
pub fn read_config(dir: &Path) -> Result<DecoderConfig> {
    Ok(read_meta(dir)?.config)
}

pub fn load(dir: &Path, device: &Device) -> Result<(Decoder, String)> {
    let meta = read_meta(dir)?;
    let json = dir.join("model.json");
    let w = dir.join("model.bpk");
    let len = crate::error::regular_file(&w)?.len();
    // Held against the file before a model of the described size is built: a hand-edited
    // model.json (vocab_size 2^64 - 1) must not allocate it. Two bytes a parameter at least
    // (Mamba-2's small vectors and the norms only add to the file).
    let want = meta.config.param_count().saturating_mul(2);
    if want > len as u128 {
        return Err(Error::input(format!(
            "{}: describes a model of at least {want} bytes (vocab_size {}, d_model {}, n_layers {}), but {} holds {len}",
            json.display(),
            meta.config.vocab_size,
            meta.config.shape.d_model,
            meta.config.shape.n_layers,
            w.display()
        )));
    }
    let bytes = std::fs::read(&w).map_err(|e| Error::input(format!("{}: {e}", w.display())))?;
    if sha256_hex(&bytes) != meta.weights_sha256 {
        return Err(Error::input(format!("{}: checksum does not match model.json: the file is corrupt", w.display())));
    }
    let record = ModuleRecord::load(&w).map_err(|e| Error::input(format!("{}: {e}", w.display())))?;
    let model = meta.config.init(0, device).try_load_record(record).map_err(|e| {
        Error::input(format!("{}: does not hold the model {} describes: {e}", w.display(), json.display()))
    })?;
    Ok((model, meta.tokenizer_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelShape;

    fn tiny() -> DecoderConfig {
        DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(16, 2, 4, 2, 32) }
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("distill-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// model.bpk replaces the old file (a new inode, via a temporary file and a rename) rather
    /// than overwriting it in place: a second link to the old file keeps the old bytes, as
    /// a reader holding it open would.
    #[test]
    fn weights_are_written_atomically() {
        let d = tmp("atomic");
        let other = d.join("other");
        std::fs::write(&other, b"old weights").unwrap();
        std::fs::hard_link(&other, d.join("model.bpk")).unwrap();
        save(&d, &tiny().init(1, &Device::flex()), "tok").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"old weights");
        assert!(load(&d, &Device::flex()).is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A hand-edited or damaged model.json is refused with the key and what was expected,
    /// instead of a division by zero or a shape panic while building the model.
    #[test]
    fn model_json_is_validated() {
        let dev = Device::flex();
        let d = tmp("json");
        save(&d, &tiny().init(1, &dev), "tok").unwrap();
        let good = std::fs::read_to_string(d.join("model.json")).unwrap();
        for (from, to, want) in [
            ("\"n_heads\": 4", "\"n_heads\": 0", "key `n_heads`: expected a positive integer, got 0"),
            ("\"n_kv_heads\": 2", "\"n_kv_heads\": 3", "n_heads (4) must be divisible by n_kv_heads (3)"),
            ("\"d_model\": 16", "\"d_model\": 18", "d_model (18) must split into n_heads (4) heads of even size"),
            (
                "\"layer_pattern\": \"A\"",
                "\"layer_pattern\": \"\"",
                "key `layer_pattern`: expected a non-empty string of A",
            ),
            ("\"vocab_size\": 40", "\"vocab_size\": 0", "key `vocab_size`: expected a positive integer, got 0"),
            // Valid on its own, but not the shape of the weights beside it.
            ("\"d_ff\": 32", "\"d_ff\": 48", "model.bpk"),
        ] {
            assert!(good.contains(from), "{from}");
            std::fs::write(d.join("model.json"), good.replace(from, to)).unwrap();
            let e = load(&d, &dev).err().unwrap_or_else(|| panic!("{to}: expected an error"));
            assert_eq!(e.exit_code(), 2, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(want) && msg.contains("model."), "{to}: {msg}");
        }
    }
}
