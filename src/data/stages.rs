//! The stages both preparation drivers share (`memory`: the corpus in RAM; `stream`: two
//! passes in bounded memory), in the order a driver calls them: the source's bad lines, the
//! training documents dropped as copies of held-out ones, the tokenizer, the split sizes and
//! the filter report, then the files that complete the stage (`meta.json` last). One place
//! for each, so the two engines report and write the same things.

use std::path::Path;

use super::config::TokenizerKind;
use super::filter::FilterReport;
use super::source::BadLines;
use super::tokenizer::Tokenizer;
use super::{DataJob, DataMeta};
use crate::error::{Error, Result};
use crate::run_dir::RunDir;
use crate::util::write_json_atomic;

pub(super) fn log_bad_lines(bad: &BadLines, log: &mut dyn FnMut(String)) {
    if bad.count > 0 {
        log(format!("skipped {} bad lines, e.g. {}", bad.count, bad.examples.join("; ")));
    }
}

pub(super) fn log_held_out_copies(n: usize, log: &mut dyn FnMut(String)) {
    if n > 0 {
        log(format!("dropped {n} training documents identical to held-out ones"));
    }
}

/// The job's tokenizer: trained on `train_text` (the kept training documents, or the
/// streaming engine's sample of them), or loaded.
pub(super) fn tokenizer<'a>(job: &DataJob, train_text: impl Iterator<Item = &'a str> + Send) -> Result<Tokenizer> {
    let t = job.tokenizer;
    match t.kind {
        TokenizerKind::Train => Tokenizer::train(train_text, t.vocab_size, t.min_frequency),
        TokenizerKind::File => Tokenizer::load(t.path.as_ref().expect("validated")),
        TokenizerKind::Teacher => {
            Tokenizer::load(job.teacher_tokenizer.as_ref().expect("set for tokenizer.kind = \"teacher\""))
        }
    }
}

/// Both splits must fill at least one row of `seq_len` inputs and their shifted targets: a
/// smaller one has nothing to train or evaluate on (and no rows to draw from).
pub fn check_split_sizes(train: usize, valid: usize, seq_len: usize) -> Result<()> {
    for (name, n, fix) in [
        ("training", train, "add data or loosen [data.filter]"),
        ("held-out", valid, "raise data.valid_fraction or add data"),
    ] {
        if n < seq_len + 1 {
            return Err(Error::input(format!(
                "the {name} split has {n} tokens, fewer than one row of data.seq_len + 1 = {}; {fix} (or lower data.seq_len)",
                seq_len + 1
            )));
        }
    }
    Ok(())
}

/// Check the split sizes, then total the filter report (`removed_tokens` per rule already
/// counted by the driver) and print its table.
pub(super) fn report(
    job: &DataJob,
    report: &mut FilterReport,
    train_tokens: usize,
    valid_tokens: usize,
    log: &mut dyn FnMut(String),
) -> Result<()> {
    check_split_sizes(train_tokens, valid_tokens, job.data.seq_len)?;
    report.tokens_kept = train_tokens;
    report.tokens_in = train_tokens + report.rules.iter().map(|r| r.removed_tokens).sum::<usize>();
    log(report.table());
    Ok(())
}

/// What a driver counted, for `meta.json`.
pub(super) struct Counts {
    pub train_docs: usize,
    pub valid_docs: usize,
    pub train_tokens: usize,
    pub valid_tokens: usize,
}

/// Write the filter report and the tokenizer beside the token files (already in place), then
/// `meta.json`, whose presence marks the stage as complete.
pub(super) fn commit(
    run_dir: &Path,
    report: &FilterReport,
    bad: &BadLines,
    tokenizer: &Tokenizer,
    n: Counts,
    log: &mut dyn FnMut(String),
) -> Result<DataMeta> {
    let rd = RunDir(run_dir);
    write_json_atomic(&rd.filter_report(), &serde_json::json!({"filter": report, "bad_lines": bad}))?;
    tokenizer.save(&rd.tokenizer())?;
    let meta = DataMeta {
        train_docs: n.train_docs,
        valid_docs: n.valid_docs,
        train_tokens: n.train_tokens,
        valid_tokens: n.valid_tokens,
        bad_lines: bad.count,
        tokenizer_hash: tokenizer.hash(),
        vocab_size: tokenizer.vocab_size(),
    };
    write_json_atomic(&rd.data_meta(), &meta)?;
    log(format!(
        "data: {} train docs ({} tokens), {} held-out docs ({} tokens), vocab {}",
        meta.train_docs, meta.train_tokens, meta.valid_docs, meta.valid_tokens, meta.vocab_size
    ));
    Ok(meta)
}
