//! Data preparation: source -> filter (+report) -> split -> tokenizer -> token streams on disk.
//! Prepared data lives in the run directory so that resume and eval never redo it.
//!
//! One preparation pipeline, two drivers: `memory` (the corpus in RAM, the default) and
//! `stream` (`data.streaming`: two passes in bounded memory), both built from the shared
//! `stages` (tokenizer choice, size checks, report, `meta.json` and the log lines), so their
//! output files are byte-identical for the same split.

pub mod chat;
pub mod config;
pub mod filter;
mod memory;
pub mod pack;
pub mod parquet_rows;
pub mod source;
mod stages;
pub mod stream;
pub mod synth;
pub mod tokenizer;
pub mod tokens;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run_dir::RunDir;
use crate::util::read_json;
use config::{DataSection, Packing, TokenizerSection};
use pack::Packed;
pub use stages::check_split_sizes;
use tokenizer::Tokenizer;
use tokens::{Flags, Tokens};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataMeta {
    pub train_docs: usize,
    pub valid_docs: usize,
    pub train_tokens: usize,
    pub valid_tokens: usize,
    pub bad_lines: usize,
    pub tokenizer_hash: String,
    pub vocab_size: usize,
    /// Whether `train.flags` / `valid.flags` were written (runs prepared before they existed
    /// have none: every token trained on, documents ending at EOS).
    #[serde(default)]
    pub flags: bool,
    #[serde(default)]
    pub train_loss_tokens: usize,
    #[serde(default)]
    pub valid_loss_tokens: usize,
}

pub struct Prepared {
    pub tokenizer: Tokenizer,
    pub train: Tokens,
    pub valid: Tokens,
    /// The token flags (`None` for data prepared before they existed).
    pub train_flags: Option<Flags>,
    pub valid_flags: Option<Flags>,
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
            train: Packed::build(self.train, self.train_flags, seq_len, self.tokenizer.eos_id, packing),
            valid: Packed::build(self.valid, self.valid_flags, seq_len, self.tokenizer.eos_id, packing),
            tok_hash: self.meta.tokenizer_hash.clone(),
            vocab: self.meta.vocab_size,
        }
    }
}

/// What preparation needs: the `[data]` and `[tokenizer]` sections and the seed, plus what
/// only the pipeline knows, since the teacher sits above the data: where the teacher's
/// tokenizer.json is, and how to score documents by the teacher's perplexity.
pub struct DataJob<'a> {
    pub data: &'a DataSection,
    pub tokenizer: &'a TokenizerSection,
    pub seed: u64,
    /// The teacher's tokenizer.json, set when `tokenizer.kind = "teacher"`.
    pub teacher_tokenizer: Option<PathBuf>,
    /// The teacher's perplexity of each tokenized training document (given the EOS id), for
    /// `data.filter.teacher_ppl_*`; loads the teacher only when called.
    #[allow(clippy::type_complexity)]
    pub doc_ppl: Option<&'a dyn Fn(&[Vec<u32>], u32) -> Result<Vec<f64>>>,
    pub chat: ChatJob,
}

/// What rendering chat and prompt/completion rows needs beyond the recipe: the template (read
/// by the pipeline from `data.chat_template`, the teacher's tokenizer_config.json or its GGUF
/// file) and the BOS/EOS spellings plain prompt/completion rows are framed with.
pub struct ChatJob {
    pub template: Option<chat::ChatTemplate>,
    /// BOS before a plain prompt, when the tokenizer adds one.
    pub plain_bos: Option<String>,
    /// EOS after a plain completion.
    pub plain_eos: String,
}

impl Default for ChatJob {
    fn default() -> Self {
        ChatJob { template: None, plain_bos: None, plain_eos: tokenizer::EOS.to_string() }
    }
}

impl<'a> DataJob<'a> {
    /// A job that needs no teacher.
    pub fn new(data: &'a DataSection, tokenizer: &'a TokenizerSection, seed: u64) -> Self {
        DataJob { data, tokenizer, seed, teacher_tokenizer: None, doc_ppl: None, chat: ChatJob::default() }
    }

    pub fn renderer(&self) -> chat::Renderer<'_> {
        chat::Renderer {
            data: self.data,
            template: self.chat.template.as_ref(),
            plain_bos: self.chat.plain_bos.clone(),
            plain_eos: self.chat.plain_eos.clone(),
        }
    }
}

/// Whether an earlier (possibly interrupted) run finished this stage: `meta.json` is written last.
fn done(run_dir: &Path) -> bool {
    RunDir(run_dir).data_meta().is_file()
}

/// Prepare the data into `run_dir`, or load it if an earlier run finished this stage. `log`
/// receives the human-readable report.
pub fn prepare(job: &DataJob, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Prepared> {
    if done(run_dir) {
        return load_prepared(run_dir);
    }
    if job.data.streaming {
        stream::prepare(job, run_dir, log)?;
        // Training always memory-maps the token files the streaming driver wrote.
        return load_prepared(run_dir);
    }
    memory::prepare(job, run_dir, log)
}

/// Prepare the data files without loading the token streams afterwards (`distill data`): with
/// `data.streaming` the whole stage runs in bounded memory.
pub fn prepare_to_disk(job: &DataJob, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<()> {
    if done(run_dir) {
        return Ok(());
    }
    if job.data.streaming {
        stream::prepare(job, run_dir, log).map(|_| ())
    } else {
        memory::prepare(job, run_dir, log).map(|_| ())
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
    let flags = |path: &Path, n: usize| meta.flags.then(|| Flags::open(path, n)).transpose();
    Ok(Prepared {
        train: Tokens::open(&rd.train_tokens(), meta.train_tokens, meta.vocab_size)?,
        valid: Tokens::open(&rd.valid_tokens(), meta.valid_tokens, meta.vocab_size)?,
        train_flags: flags(&rd.train_flags(), meta.train_tokens)?,
        valid_flags: flags(&rd.valid_flags(), meta.valid_tokens)?,
        tokenizer,
        meta,
    })
}
