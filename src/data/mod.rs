//! Data preparation: source -> filter (+report) -> split -> tokenizer -> token streams on disk.
//! Prepared data lives in the run directory so that resume and eval never redo it.

pub mod filter;
pub mod pack;
pub mod source;
pub mod synth;
pub mod tokenizer;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::recipe::{Recipe, TokenizerKind};
use crate::util::{read_json, write_atomic, write_json_atomic};
use pack::permutation;
use tokenizer::Tokenizer;

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
    pub train: Vec<u32>,
    pub valid: Vec<u32>,
    pub meta: DataMeta,
}

/// Prepare the data into `run_dir`, or load it if an earlier (possibly interrupted) run
/// finished this stage. `log` receives the human-readable report.
pub fn prepare(recipe: &Recipe, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Prepared> {
    let dir = run_dir.join("data");
    let meta_path = dir.join("meta.json");
    if meta_path.is_file() {
        return load_prepared(run_dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let (docs, bad) = source::load(&recipe.data, recipe.run.seed)?;
    if bad.count > 0 {
        log(format!("skipped {} bad lines, e.g. {}", bad.count, bad.examples.join("; ")));
    }
    let (docs, report) = filter::apply(docs, &recipe.data.filter);
    log(report.table());
    write_json_atomic(&dir.join("filter_report.json"), &serde_json::json!({"filter": report, "bad_lines": bad}))?;
    if docs.len() < 2 {
        return Err(Error::input(format!("only {} documents left after filtering; need at least 2", docs.len())));
    }
    // Hold out whole documents, so no held-out text was seen in training.
    let order = permutation(docs.len(), recipe.run.seed ^ 0x5eed_da7a);
    let n_valid = ((docs.len() as f64 * recipe.data.valid_fraction).round() as usize).clamp(1, docs.len() - 1);
    let (mut train_docs, mut valid_docs) = (Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        if rank < n_valid { valid_docs.push(&docs[i]) } else { train_docs.push(&docs[i]) }
    }
    let t = &recipe.tokenizer;
    let tokenizer = match t.kind {
        TokenizerKind::Train => Tokenizer::train(train_docs.iter().map(|s| s.as_str()), t.vocab_size, t.min_frequency)?,
        TokenizerKind::File => Tokenizer::load(t.path.as_ref().expect("validated"))?,
        TokenizerKind::Teacher => Tokenizer::load(&recipe.teacher.path.as_ref().expect("validated").join("tokenizer.json"))?,
    };
    let encode = |ds: &[&String]| -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for d in ds {
            out.extend(tokenizer.encode(d)?);
            out.push(tokenizer.eos_id);
        }
        Ok(out)
    };
    let train = encode(&train_docs)?;
    let valid = encode(&valid_docs)?;
    if valid.len() < recipe.data.seq_len + 1 {
        return Err(Error::input(format!(
            "the held-out split has {} tokens, fewer than one row of data.seq_len + 1 = {}; raise data.valid_fraction or add data",
            valid.len(), recipe.data.seq_len + 1)));
    }
    tokenizer.save(&run_dir.join("tokenizer.json"))?;
    write_atomic(&dir.join("train.u32"), &to_bytes(&train))?;
    write_atomic(&dir.join("valid.u32"), &to_bytes(&valid))?;
    let meta = DataMeta {
        train_docs: train_docs.len(),
        valid_docs: valid_docs.len(),
        train_tokens: train.len(),
        valid_tokens: valid.len(),
        bad_lines: bad.count,
        tokenizer_hash: tokenizer.hash(),
        vocab_size: tokenizer.vocab_size(),
    };
    // meta.json last: its presence marks the stage as complete.
    write_json_atomic(&meta_path, &meta)?;
    log(format!(
        "data: {} train docs ({} tokens), {} held-out docs ({} tokens), vocab {}",
        meta.train_docs, meta.train_tokens, meta.valid_docs, meta.valid_tokens, meta.vocab_size
    ));
    Ok(Prepared { tokenizer, train, valid, meta })
}

pub fn load_prepared(run_dir: &Path) -> Result<Prepared> {
    let dir = run_dir.join("data");
    let meta: DataMeta = read_json(&dir.join("meta.json"))?;
    let tokenizer = Tokenizer::load(&run_dir.join("tokenizer.json"))?;
    if tokenizer.hash() != meta.tokenizer_hash {
        return Err(Error::input(format!(
            "{}: tokenizer.json does not match the one the data was prepared with", run_dir.display())));
    }
    let read = |name: &str, expect: usize| -> Result<Vec<u32>> {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
        let toks = from_bytes(&bytes);
        if bytes.len() % 4 != 0 || toks.len() != expect {
            return Err(Error::input(format!("{}: corrupt token file (expected {expect} tokens)", p.display())));
        }
        if let Some(bad) = toks.iter().find(|&&t| t as usize >= meta.vocab_size) {
            return Err(Error::input(format!("{}: token id {bad} is outside the vocabulary ({})", p.display(), meta.vocab_size)));
        }
        Ok(toks)
    };
    Ok(Prepared {
        train: read("train.u32", meta.train_tokens)?,
        valid: read("valid.u32", meta.valid_tokens)?,
        tokenizer,
        meta,
    })
}

fn to_bytes(t: &[u32]) -> Vec<u8> {
    t.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
