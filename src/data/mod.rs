//! Data preparation: source -> filter (+report) -> split -> tokenizer -> token streams on disk.
//! Prepared data lives in the run directory so that resume and eval never redo it.

pub mod filter;
pub mod pack;
pub mod source;
pub mod stream;
pub mod synth;
pub mod tokenizer;
pub mod tokens;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::recipe::{Packing, Recipe, TokenizerKind};
use crate::util::{read_json, write_atomic, write_json_atomic};
use pack::{Packed, permutation};
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

/// Prepare the data into `run_dir`, or load it if an earlier (possibly interrupted) run
/// finished this stage. `log` receives the human-readable report.
pub fn prepare(recipe: &Recipe, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Prepared> {
    let dir = run_dir.join("data");
    let meta_path = dir.join("meta.json");
    if meta_path.is_file() {
        return load_prepared(run_dir);
    }
    if recipe.data.streaming {
        prepare_to_disk(recipe, run_dir, log)?;
        return load_prepared(run_dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let (docs, bad) = source::load(&recipe.data, recipe.run.seed)?;
    if bad.count > 0 {
        log(format!("skipped {} bad lines, e.g. {}", bad.count, bad.examples.join("; ")));
    }
    if docs.len() < 2 {
        return Err(Error::input(format!("only {} documents in the input; need at least 2", docs.len())));
    }
    // Hold out whole documents before filtering: the held-out split is the same text whatever
    // the filters and noise settings, so such runs are compared on equal terms, and no
    // held-out document (or an exact copy of one) is trained on.
    let order = permutation(docs.len(), recipe.run.seed ^ 0x5eed_da7a);
    let n_valid = ((docs.len() as f64 * recipe.data.valid_fraction).round() as usize).clamp(1, docs.len() - 1);
    let (mut train_raw, mut valid_docs) = (Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        if rank < n_valid { valid_docs.push(docs[i].clone()) } else { train_raw.push(docs[i].clone()) }
    }
    drop(docs);
    if recipe.data.synthetic_noise > 0.0 {
        let n = (train_raw.len() as f64 * recipe.data.synthetic_noise).round() as usize;
        let junk = synth::noise(recipe.run.seed, &train_raw, n);
        let mut rng = crate::rng::SplitMix(recipe.run.seed ^ 0x0015_e5ed);
        for j in junk {
            let at = rng.below(train_raw.len() + 1);
            train_raw.insert(at, j);
        }
        log(format!("mixed {n} junk documents into the training split (data.synthetic_noise = {})", recipe.data.synthetic_noise));
    }
    let held_out: std::collections::HashSet<[u8; 32]> = valid_docs.iter().map(|d| filter::dedup_key(d)).collect();
    let before = train_raw.len();
    train_raw.retain(|d| !held_out.contains(&filter::dedup_key(d)));
    if train_raw.len() < before {
        log(format!("dropped {} training documents identical to held-out ones", before - train_raw.len()));
    }
    let (train_docs, mut report, removed) = filter::apply(train_raw, &recipe.data.filter);
    if train_docs.is_empty() {
        return Err(Error::input("no training documents left after filtering; loosen [data.filter]"));
    }
    let t = &recipe.tokenizer;
    let tokenizer = match t.kind {
        TokenizerKind::Train => Tokenizer::train(train_docs.iter().map(|s| s.as_str()), t.vocab_size, t.min_frequency)?,
        TokenizerKind::File => Tokenizer::load(t.path.as_ref().expect("validated"))?,
        TokenizerKind::Teacher => Tokenizer::load(&crate::teacher::cache::teacher_tokenizer(recipe))?,
    };
    let mut train_tok: Vec<Vec<u32>> = train_docs.iter().map(|d| tokenizer.encode_doc(d)).collect::<Result<_>>()?;
    for (rule, doc) in &removed {
        report.rules[*rule].removed_tokens += tokenizer.encode_doc(doc)?.len();
    }
    let mut train_docs = train_docs;
    if let (lo, hi) = (recipe.data.filter.teacher_ppl_min, recipe.data.filter.teacher_ppl_max) && (lo.is_some() || hi.is_some()) {
        let device = crate::device::device_for(recipe.run.backend);
        let teacher = crate::teacher::Teacher::of(recipe, run_dir).load_before_data(&device)?;
        let ppl = crate::teacher::doc_ppl(&teacher, &train_tok, tokenizer.eos_id, &device);
        let (lo, hi) = (lo.unwrap_or(1.0), hi.unwrap_or(f64::INFINITY));
        let mut keep_docs = Vec::new();
        let mut keep_tok = Vec::new();
        for ((d, tk), p) in train_docs.into_iter().zip(train_tok).zip(ppl) {
            if (lo..=hi).contains(&p) {
                keep_docs.push(d);
                keep_tok.push(tk);
            } else {
                report.remove_by_teacher_ppl(&d, tk.len());
            }
        }
        (train_docs, train_tok) = (keep_docs, keep_tok);
    }
    report.tokens_kept = train_tok.iter().map(Vec::len).sum();
    report.tokens_in = report.tokens_kept + report.rules.iter().map(|r| r.removed_tokens).sum::<usize>();
    log(report.table());
    write_json_atomic(&dir.join("filter_report.json"), &serde_json::json!({"filter": report, "bad_lines": bad}))?;
    let valid_refs: Vec<&String> = valid_docs.iter().collect();
    let encode = |ds: &[&String]| -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for d in ds {
            out.extend(tokenizer.encode_doc(d)?);
        }
        Ok(out)
    };
    let train: Vec<u32> = train_tok.into_iter().flatten().collect();
    let valid = encode(&valid_refs)?;
    check_split_sizes(train.len(), valid.len(), recipe.data.seq_len)?;
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
    Ok(Prepared { tokenizer, train: train.into(), valid: valid.into(), meta })
}

/// Prepare the data files without loading the token streams afterwards (`distill data`): with
/// `data.streaming` the whole stage runs in bounded memory.
pub fn prepare_to_disk(recipe: &Recipe, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<()> {
    let meta_path = run_dir.join("data").join("meta.json");
    if meta_path.is_file() {
        return Ok(());
    }
    if !recipe.data.streaming {
        return prepare(recipe, run_dir, log).map(|_| ());
    }
    let meta = stream::prepare(recipe, run_dir, log)?;
    // meta.json last: its presence marks the stage as complete.
    write_json_atomic(&meta_path, &meta)?;
    log(format!(
        "data: {} train docs ({} tokens), {} held-out docs ({} tokens), vocab {}",
        meta.train_docs, meta.train_tokens, meta.valid_docs, meta.valid_tokens, meta.vocab_size
    ));
    Ok(())
}

pub fn load_prepared(run_dir: &Path) -> Result<Prepared> {
    let dir = run_dir.join("data");
    let meta: DataMeta = read_json(&dir.join("meta.json"))?;
    let tokenizer = Tokenizer::load(&run_dir.join("tokenizer.json"))?;
    if tokenizer.hash() != meta.tokenizer_hash {
        return Err(Error::input(format!(
            "{}: tokenizer.json does not match the one the data was prepared with", run_dir.display())));
    }
    Ok(Prepared {
        train: Tokens::open(&dir.join("train.u32"), meta.train_tokens, meta.vocab_size)?,
        valid: Tokens::open(&dir.join("valid.u32"), meta.valid_tokens, meta.vocab_size)?,
        tokenizer,
        meta,
    })
}

/// Both splits must fill at least one row of `seq_len` inputs and their shifted targets: a
/// smaller one has nothing to train or evaluate on (and no rows to draw from).
pub fn check_split_sizes(train: usize, valid: usize, seq_len: usize) -> Result<()> {
    for (name, n, fix) in [("training", train, "add data or loosen [data.filter]"), ("held-out", valid, "raise data.valid_fraction or add data")] {
        if n < seq_len + 1 {
            return Err(Error::input(format!(
                "the {name} split has {n} tokens, fewer than one row of data.seq_len + 1 = {}; {fix} (or lower data.seq_len)", seq_len + 1)));
        }
    }
    Ok(())
}

fn to_bytes(t: &[u32]) -> Vec<u8> {
    t.iter().flat_map(|x| x.to_le_bytes()).collect()
}
