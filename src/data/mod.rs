//! Data preparation: source -> filter (+report) -> split -> tokenizer -> token streams on disk.
//! Prepared data lives in the run directory so that resume and eval never redo it.
//!
//! One preparation pipeline, two drivers: `memory` (the corpus in RAM, the default) and
//! `stream` (`data.streaming`: two passes in bounded memory), both built from the shared
//! `stages` (tokenizer choice, size checks, report, `meta.json` and the log lines), so their
//! output files are byte-identical for the same split.

pub mod filter;
mod memory;
pub mod pack;
pub mod source;
mod stages;
pub mod stream;
pub mod synth;
pub mod tokenizer;
pub mod tokens;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::recipe::{Packing, Recipe};
use crate::run_dir::RunDir;
use crate::util::read_json;
use pack::Packed;
pub use stages::check_split_sizes;
use tokenizer::Tokenizer;
use tokens::Tokens;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataMeta {
    pub train_docs: usize,
    pub valid_docs: usize,
    pub train_tokens: usize,
    pub valid_tokens: usize,
    pub bad_lines: usize,
    pub tokenizer_hash: String,
    pub vocab_size: usize,
}

pub struct Prepared {
    pub tokenizer: Tokenizer,
    pub train: Tokens,
    pub valid: Tokens,
    pub meta: DataMeta,
}

/// The prepared data of a run, packed into rows: what training, the teacher and its cache read.
pub struct RunData {
    pub train: Packed,
    pub valid: Packed,
    pub tok_hash: String,
    pub vocab: usize,
}

impl Prepared {
    pub fn pack(self, seq_len: usize, packing: Packing) -> RunData {
        RunData {
            train: Packed::build(self.train, seq_len, self.tokenizer.eos_id, packing),
            valid: Packed::build(self.valid, seq_len, self.tokenizer.eos_id, packing),
            tok_hash: self.meta.tokenizer_hash.clone(),
            vocab: self.meta.vocab_size,
        }
    }
}

/// Whether an earlier (possibly interrupted) run finished this stage: `meta.json` is written last.
fn done(run_dir: &Path) -> bool {
    RunDir(run_dir).data_meta().is_file()
}

/// Prepare the data into `run_dir`, or load it if an earlier run finished this stage. `log`
/// receives the human-readable report.
pub fn prepare(recipe: &Recipe, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Prepared> {
    if done(run_dir) {
        return load_prepared(run_dir);
    }
    if recipe.data.streaming {
        stream::prepare(recipe, run_dir, log)?;
        // Training always memory-maps the token files the streaming driver wrote.
        return load_prepared(run_dir);
    }
    memory::prepare(recipe, run_dir, log)
}

/// Prepare the data files without loading the token streams afterwards (`distill data`): with
/// `data.streaming` the whole stage runs in bounded memory.
pub fn prepare_to_disk(recipe: &Recipe, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<()> {
    if done(run_dir) {
        return Ok(());
    }
    if recipe.data.streaming {
        stream::prepare(recipe, run_dir, log).map(|_| ())
    } else {
        memory::prepare(recipe, run_dir, log).map(|_| ())
    }
}

pub fn load_prepared(run_dir: &Path) -> Result<Prepared> {
    let rd = RunDir(run_dir);
    let meta: DataMeta = read_json(&rd.data_meta())?;
    let tokenizer = Tokenizer::load(&rd.tokenizer())?;
    if tokenizer.hash() != meta.tokenizer_hash {
        return Err(Error::input(format!(
            "{}: tokenizer.json does not match the one the data was prepared with",
            run_dir.display()
        )));
    }
    Ok(Prepared {
        train: Tokens::open(&rd.train_tokens(), meta.train_tokens, meta.vocab_size)?,
        valid: Tokens::open(&rd.valid_tokens(), meta.valid_tokens, meta.vocab_size)?,
        tokenizer,
        meta,
    })
}
