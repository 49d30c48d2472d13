//! Atomic checkpoints of a whole training state: model, optimizer, and `state.json` (step,
//! data cursor, counters). Written into a temporary directory, fsynced, renamed into place,
//! and only then pointed at by `LATEST`, so a crash at any moment leaves the previous
//! checkpoint intact. A `MANIFEST` of SHA-256 sums catches a corrupted file on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use super::adamw::AdamW;
use super::config::OptimSection;
use crate::error::{Error, Result, io_ctx};
use crate::model::Decoder;
use crate::util::{read_json, sha256_hex, write_atomic, write_json_atomic};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Training rows drawn so far (the data position).
    pub cursor: u64,
    /// Target tokens trained on so far.
    pub tokens: u64,
    /// Wall-clock seconds spent training so far, across restarts.
    pub elapsed_s: f64,
    /// The learning rate's factor after `run.on_nan = "rollback"`s (1 before any).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lr_scale: f64,
    /// Rollbacks taken so far, and batches skipped in a row (`run.on_nan`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rollbacks: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_in_a_row: u32,
}

impl TrainState {
    pub fn start() -> Self {
        TrainState { step: 0, cursor: 0, tokens: 0, elapsed_s: 0.0, lr_scale: 1.0, rollbacks: 0, skipped_in_a_row: 0 }
    }
}

fn one() -> f64 {
    1.0
}
fn is_one(x: &f64) -> bool {
    *x == 1.0
}
fn is_zero(x: &u32) -> bool {
    *x == 0
}

const FILES: [&str; 3] = ["model.bpk", "optimizer.safetensors", "state.json"];

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
}

pub fn save(dir: &Path, model: &Decoder, optim: &AdamW, state: &TrainState, keep_last: usize) -> Result<()> {
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".tmp-{name}"));
    let fin = dir.join(&name);
    let ctx = |what: &str| format!("checkpoint {}: {what}", tmp.display());
    if tmp.exists() {
        io_ctx(std::fs::remove_dir_all(&tmp), || ctx("clear stale temp dir"))?;
    }
    io_ctx(std::fs::create_dir_all(&tmp), || ctx("create"))?;
    model.clone().save_file(tmp.join("model.bpk")).map_err(|e| Error::runtime(ctx(&format!("model: {e}"))))?;
    optim.save(model, &tmp.join("optimizer.safetensors"))?;
    write_json_atomic(&tmp.join("state.json"), state)?;
    let mut manifest = BTreeMap::new();
    for f in FILES {
        let p = tmp.join(f);
        let bytes = io_ctx(std::fs::read(&p), || ctx(f))?;
        // Re-open and fsync what burn wrote: its writers do not promise durability.
        if let Ok(file) = std::fs::File::open(&p) {
            file.sync_all().ok();
        }
        manifest.insert(f.to_string(), sha256_hex(&bytes));
    }
    write_json_atomic(&tmp.join("MANIFEST"), &manifest)?;
    sync_dir(&tmp);
    if fin.exists() {
        io_ctx(std::fs::remove_dir_all(&fin), || ctx("replace"))?;
    }
    io_ctx(std::fs::rename(&tmp, &fin), || ctx("rename"))?;
    sync_dir(dir);
    write_atomic(&dir.join("LATEST"), name.as_bytes())?;
    prune(dir, keep_last)
}

/// The step of checkpoint directory `p` (`step-00001000`), from its name.
pub fn step_of(p: &Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    v.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")));
    v.sort();
    v
}

fn prune(dir: &Path, keep_last: usize) -> Result<()> {
    // A crash in the middle of `save` leaves a temporary directory: never a checkpoint.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(".tmp-")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let all = list(dir);
    for old in all.iter().take(all.len().saturating_sub(keep_last)) {
        io_ctx(std::fs::remove_dir_all(old), || format!("prune {}", old.display()))?;
    }
    Ok(())
}

/// The newest checkpoint that loads: every `step-*` directory, newest first (each is complete
/// once it has its name; `LATEST` is only a pointer, written after). A damaged one is skipped
/// with a line on stderr naming it and why; `None` when there are none; the newest one's error
/// when none loads.
pub fn load_newest_good(
    dir: &Path,
    model: &Decoder,
    o: &OptimSection,
    device: &burn::tensor::Device,
) -> Result<Option<(Decoder, AdamW, TrainState)>> {
    let mut first_error = None;
    for ck in list(dir).into_iter().rev() {
        match load(&ck, model.clone(), o, device) {
            Ok(loaded) => {
                if let Some(e) = &first_error {
                    eprintln!("warning: resuming from {} instead: {e}", ck.display());
                }
                return Ok(Some(loaded));
            }
            Err(e) => {
                eprintln!("warning: checkpoint {} cannot be used: {e}", ck.display());
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

/// Verify the manifest, then load model weights into `model` and the optimizer state.
pub fn load(
    ck: &Path,
    model: Decoder,
    o: &OptimSection,
    device: &burn::tensor::Device,
) -> Result<(Decoder, AdamW, TrainState)> {
    if ck.join("optimizer.bpk").exists() {
        return Err(Error::input(format!(
            "{}: a checkpoint of an older distill (burn's optimizer record); continue that run with the version that wrote it",
            ck.display()
        )));
    }
    let model = load_model(ck, model)?;
    let optim = AdamW::load(o, &model, &ck.join("optimizer.safetensors"), device)?;
    let state: TrainState = read_json(&ck.join("state.json"))?;
    Ok((model, optim, state))
}

/// The model weights of checkpoint `ck` into `model`, every file checked against the manifest.
pub fn load_model(ck: &Path, model: Decoder) -> Result<Decoder> {
    let manifest: BTreeMap<String, String> = read_json(&ck.join("MANIFEST"))?;
    for f in FILES {
        let p = ck.join(f);
        crate::error::regular_file(&p)?;
        let bytes = std::fs::read(&p).map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
        if manifest.get(f).map(|s| s.as_str()) != Some(sha256_hex(&bytes).as_str()) {
            return Err(Error::input(format!(
                "{}: checksum does not match MANIFEST: the checkpoint is corrupt",
                p.display()
            )));
        }
    }
    let record = ModuleRecord::load(ck.join("model.bpk"))
        .map_err(|e| Error::input(format!("{}: {e}", ck.join("model.bpk").display())))?;
    // A checkpoint of another model (a recipe edited between runs) is refused, not a panic.
    model.try_load_record(record).map_err(|e| {
        Error::input(format!(
            "{}: does not fit the model the recipe describes ({e}); the recipe changed since this checkpoint was written",
            ck.join("model.bpk").display()
        ))
    })
}
