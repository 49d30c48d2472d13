//! The stages both preparation drivers share (`memory`: the corpus in RAM; `stream`: two
//! passes in bounded memory), in the order a driver calls them: the source's bad lines, the
//! training documents dropped as copies of held-out ones, the tokenizer, the split sizes and
//! the filter report, then the files that complete the stage (`meta.json` last). One place
//! for each, so the two engines report and write the same things.

use std::path::Path;

use super::config::{DataFormat, DataSection, TokenizerKind};
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

/// A document's tokens and their flags ([`super::tokens::LOSS`], `DOC_START`): plain text as
/// [`Tokenizer::encode_doc`] gives it, every token trained on; a chat or prompt/completion
/// document as rendered, trained on where its spans are marked.
pub(super) fn encode(data: &DataSection, tokenizer: &Tokenizer, doc: &str) -> Result<(Vec<u32>, Vec<u8>)> {
    use super::tokens::{DOC_START, LOSS};
    let (ids, mut flags) = match data.row_format() {
        DataFormat::Text => {
            let ids = tokenizer.encode_doc(doc)?;
            let n = ids.len();
            (ids, vec![LOSS; n])
        }
        _ => {
            let (ids, mask) = tokenizer.encode_marked(doc)?;
            (ids, mask.into_iter().map(|m| if m { LOSS } else { 0 }).collect())
        }
    };
    if let Some(f) = flags.first_mut() {
        *f |= DOC_START;
    }
    Ok((ids, flags))
}

/// How many of `flags`' tokens carry the loss. The first token of a document is never a
/// target (nothing before it in its document predicts it), so it is not counted.
pub(super) fn loss_tokens(flags: &[u8]) -> usize {
    use super::tokens::{DOC_START, LOSS};
    flags.iter().filter(|&&f| f & LOSS != 0 && f & DOC_START == 0).count()
}

/// The text a tokenizer is trained on: chat documents without their span markers.
pub(super) fn sample_text<'a>(job: &DataJob, doc: &'a str) -> std::borrow::Cow<'a, str> {
    match job.data.row_format() {
        DataFormat::Text => doc.into(),
        _ => super::chat::unmark(doc).0.into(),
    }
}

/// The job's tokenizer: trained on `train_text` (the kept training documents, or the
/// streaming engine's sample of them), or loaded.
pub(super) fn tokenizer<'a>(job: &DataJob, train_text: impl Iterator<Item = &'a str> + Send) -> Result<Tokenizer> {
    let t = job.tokenizer;
    match t.kind {
        TokenizerKind::Train => Tokenizer::train(train_text, t.vocab_size, t.min_frequency, &t.special_tokens),
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
    /// Tokens that carry the loss in each split.
    pub train_loss_tokens: usize,
    pub valid_loss_tokens: usize,
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
        flags: true,
        train_loss_tokens: n.train_loss_tokens,
        valid_loss_tokens: n.valid_loss_tokens,
    };
    write_json_atomic(&rd.data_meta(), &meta)?;
    log(format!(
        "data: {} train docs ({} tokens), {} held-out docs ({} tokens), vocab {}",
        meta.train_docs, meta.train_tokens, meta.valid_docs, meta.valid_tokens, meta.vocab_size
    ));
    if meta.train_loss_tokens < meta.train_tokens {
        log(format!(
            "loss on {} of {} training tokens ({:.1}%) and {} of {} held-out tokens",
            meta.train_loss_tokens,
            meta.train_tokens,
            100.0 * meta.train_loss_tokens as f64 / meta.train_tokens.max(1) as f64,
            meta.valid_loss_tokens,
            meta.valid_tokens
        ));
    }
    Ok(meta)
}
