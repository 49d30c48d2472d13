//! Data preparation with the whole corpus in memory (the default): a seeded permutation holds
//! out whole documents, the filters see every training document at once (plus the optional
//! noise and teacher-perplexity filter, which need that), and the token files are written at
//! the end. The shared stages are in `stages`.

use std::path::Path;

use super::DataJob;
use super::pack::permutation;
use super::stages::{self, Counts};
use super::{Prepared, filter, source, synth};
use crate::error::{Error, Result};
use crate::run_dir::RunDir;
use crate::util::write_atomic;

/// Prepare `job`'s data into `<run_dir>/data` and return it, token streams in memory.
pub(super) fn prepare(job: &DataJob, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Prepared> {
    let dir = RunDir(run_dir).data();
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let (docs, bad) = source::load(job)?;
    stages::log_bad_lines(&bad, log);
    if docs.len() < 2 {
        return Err(Error::input(format!(
            "{}: only {} documents in the input; need at least 2",
            source::describe(job.data),
            docs.len()
        )));
    }
    // Hold out whole documents before filtering: the held-out split is the same text whatever
    // the filters and noise settings, so such runs are compared on equal terms, and no
    // held-out document (or an exact copy of one) is trained on.
    let order = permutation(docs.len(), job.seed ^ 0x5eed_da7a);
    let n_valid = ((docs.len() as f64 * job.data.valid_fraction).round() as usize).clamp(1, docs.len() - 1);
    let (mut train_raw, mut valid_docs) = (Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        if rank < n_valid { valid_docs.push(docs[i].clone()) } else { train_raw.push(docs[i].clone()) }
    }
    drop(docs);
    if job.data.synthetic_noise > 0.0 {
        let n = (train_raw.len() as f64 * job.data.synthetic_noise).round() as usize;
        let junk = synth::noise(job.seed, &train_raw, n);
        let mut rng = crate::rng::SplitMix(job.seed ^ 0x0015_e5ed);
        for j in junk {
            let at = rng.below(train_raw.len() + 1);
            train_raw.insert(at, j);
        }
        log(format!(
            "mixed {n} junk documents into the training split (data.synthetic_noise = {})",
            job.data.synthetic_noise
        ));
    }
    let held_out: std::collections::HashSet<[u8; 32]> = valid_docs.iter().map(|d| filter::dedup_key(d)).collect();
    let before = train_raw.len();
    train_raw.retain(|d| !held_out.contains(&filter::dedup_key(d)));
    stages::log_held_out_copies(before - train_raw.len(), log);
    let (mut train_docs, mut report, removed) = filter::apply(train_raw, &job.data.filter);
    if train_docs.is_empty() {
        return Err(Error::input("no training documents left after filtering; loosen [data.filter]"));
    }
    // Plain text is borrowed as it is; chat documents lose their span marks.
    let sample: Vec<_> = train_docs.iter().map(|d| stages::sample_text(job, d)).collect();
    let tokenizer = stages::tokenizer(job, sample.iter().map(|s| s.as_ref()))?;
    drop(sample);
    let encode = |d: &String| stages::encode(job.data, &tokenizer, d);
    let encoded: Vec<(Vec<u32>, Vec<u8>)> = train_docs.iter().map(encode).collect::<Result<_>>()?;
    let (mut train_tok, mut train_doc_flags): (Vec<Vec<u32>>, Vec<Vec<u8>>) = encoded.into_iter().unzip();
    for (rule, doc) in &removed {
        report.rules[*rule].removed_tokens += encode(doc)?.0.len();
    }
    if let (lo, hi) = (job.data.filter.teacher_ppl_min, job.data.filter.teacher_ppl_max)
        && (lo.is_some() || hi.is_some())
    {
        let doc_ppl = job.doc_ppl.ok_or_else(|| Error::input("data.filter.teacher_ppl_* needs a loaded teacher"))?;
        let ppl = doc_ppl(&train_tok, tokenizer.eos_id)?;
        let (lo, hi) = (lo.unwrap_or(1.0), hi.unwrap_or(f64::INFINITY));
        let (mut keep_docs, mut keep_tok, mut keep_flags) = (Vec::new(), Vec::new(), Vec::new());
        for (((d, tk), fl), p) in train_docs.into_iter().zip(train_tok).zip(train_doc_flags).zip(ppl) {
            if (lo..=hi).contains(&p) {
                keep_docs.push(d);
                keep_tok.push(tk);
                keep_flags.push(fl);
            } else {
                report.remove_by_teacher_ppl(&d, tk.len());
            }
        }
        (train_docs, train_tok, train_doc_flags) = (keep_docs, keep_tok, keep_flags);
    }
    let train: Vec<u32> = train_tok.into_iter().flatten().collect();
    let train_flags: Vec<u8> = train_doc_flags.into_iter().flatten().collect();
    let (mut valid, mut valid_flags) = (Vec::new(), Vec::new());
    for d in &valid_docs {
        let (t, f) = encode(d)?;
        valid.extend(t);
        valid_flags.extend(f);
    }
    stages::report(job, &mut report, train.len(), valid.len(), log)?;
    let rd = RunDir(run_dir);
    write_atomic(&rd.train_tokens(), &to_bytes(&train))?;
    write_atomic(&rd.valid_tokens(), &to_bytes(&valid))?;
    write_atomic(&rd.train_flags(), &train_flags)?;
    write_atomic(&rd.valid_flags(), &valid_flags)?;
    let n = Counts {
        train_docs: train_docs.len(),
        valid_docs: valid_docs.len(),
        train_tokens: train.len(),
        valid_tokens: valid.len(),
        train_loss_tokens: stages::loss_tokens(&train_flags),
        valid_loss_tokens: stages::loss_tokens(&valid_flags),
    };
    let meta = stages::commit(run_dir, &report, &bad, &tokenizer, n, log)?;
    Ok(Prepared {
        tokenizer,
        train: train.into(),
        valid: valid.into(),
        train_flags: Some(train_flags.into()),
        valid_flags: Some(valid_flags.into()),
        meta,
    })
}

fn to_bytes(t: &[u32]) -> Vec<u8> {
    t.iter().flat_map(|x| x.to_le_bytes()).collect()
}
