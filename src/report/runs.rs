//! `distill runs [dir]`: each run directory of a folder with its status, step, best held-out
//! loss and exports, read from its files (nothing is loaded).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::run_dir::RunDir;
use crate::train::metrics;

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub name: String,
    pub status: String,
    /// Why it failed, for a failed run.
    pub detail: Option<String>,
    /// The phase and step of the last metrics row, and the phase's planned steps.
    pub phase: Option<String>,
    pub step: Option<usize>,
    pub steps: Option<usize>,
    /// The student's lowest held-out loss so far.
    pub best_held_out: Option<f64>,
    /// Export files (name, bytes).
    pub exports: Vec<(String, u64)>,
}

/// The run directories directly under `dir` (those with a resolved recipe), by name.
pub fn list(dir: &Path) -> Vec<RunRow> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| RunDir(p).resolved_recipe().is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|p| row(p)).collect()
}

/// One run's row.
pub fn row(dir: &Path) -> RunRow {
    let rd = RunDir(dir);
    let status = rd.status();
    let rows = metrics::read(&rd.metrics());
    let last = rows.last();
    let steps = last.and_then(|l| planned_steps(dir, &l.phase));
    let best = rows.iter().filter(|r| r.phase == "student").filter_map(|r| r.eval_loss).reduce(f64::min);
    let mut exports: Vec<(String, u64)> = std::fs::read_dir(rd.export())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        // The weights: a GGUF file, or the safetensors of an HF / int8 / int4 folder (its
        // config and tokenizer ride along).
        .filter(|p| p.extension().is_some_and(|x| x == "gguf" || x == "safetensors") || p.is_dir())
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().to_string(), dir_size(&p)?)))
        .collect();
    exports.sort();
    RunRow {
        name: dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
        detail: match &status {
            crate::run_dir::RunStatus::Failed(why) => Some(why.clone()),
            _ => None,
        },
        status: status.word().to_string(),
        phase: last.map(|l| l.phase.clone()),
        step: last.map(|l| l.step),
        steps,
        best_held_out: best,
        exports,
    }
}

/// The steps the recipe plans for `phase`, from the resolved recipe's text (a run of an
/// older or newer distill still lists).
fn planned_steps(dir: &Path, phase: &str) -> Option<usize> {
    let text = std::fs::read_to_string(RunDir(dir).resolved_recipe()).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    let optim = match phase {
        "teacher" => v.get("teacher")?.get("optim")?,
        _ => v.get("optim")?,
    };
    optim.get("steps")?.as_integer().map(|n| n as usize)
}

/// A file's size, or a folder's files' total.
fn dir_size(p: &Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?;
    if m.is_file() {
        return Some(m.len());
    }
    Some(std::fs::read_dir(p).ok()?.flatten().filter_map(|e| dir_size(&e.path())).sum())
}
