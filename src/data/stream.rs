//! Data preparation in bounded memory (`data.streaming = true`), for corpora larger than RAM.
//!
//! Two passes over the source, one document in memory at a time:
//! 1. each document is assigned to the held-out split by a seeded hash of its index (about
//!    `valid_fraction` of them), training documents go through the filters (whose state is
//!    one hash per document kept, plus the MinHash index when enabled), and the first
//!    `tokenizer_sample_mb` of kept training text is kept as the tokenizer's sample;
//! 2. the same documents again, encoded and appended straight to `train.u32` / `valid.u32`.
//!
//! What stays in memory grows with the number of documents (one byte of decision and 32 bytes
//! of dedup hash each), not with their text.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::DataJob;
use super::filter::{self, Filter};
use super::stages::{self, Counts};
use super::{DataMeta, source};
use crate::error::{Error, Result};
use crate::rng::SplitMix;
use crate::run_dir::RunDir;

const HELD: u8 = u8::MAX;
/// Documents inspected or encoded together (split across the cores) in each pass; small in
/// tests so that they cross batch boundaries.
const BATCH: usize = if cfg!(test) { 64 } else { 2048 };

/// Whether document `i` is held out: a seeded hash, so both passes agree without a list.
fn held_out(seed: u64, i: u64, fraction: f64) -> bool {
    let mut r = SplitMix(seed ^ 0x5eed_da7a ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.uniform() < fraction
}

/// Appends bytes to `<path>.tmp`; `finish` syncs and renames it into place.
struct AppendFile {
    path: PathBuf,
    tmp: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
}

impl AppendFile {
    fn create(path: PathBuf) -> Result<Self> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let f = std::fs::File::create(&tmp).map_err(|e| Error::runtime(format!("{}: {e}", tmp.display())))?;
        Ok(AppendFile { path, tmp, w: std::io::BufWriter::with_capacity(1 << 20, f) })
    }
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|e| Error::runtime(format!("{}: {e}", self.tmp.display())))
    }
    fn finish(self) -> Result<()> {
        let f = self.w.into_inner().map_err(|e| Error::runtime(format!("{}: {e}", self.tmp.display())))?;
        f.sync_all().map_err(|e| Error::runtime(format!("{}: {e}", self.tmp.display())))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::runtime(format!("{}: {e}", self.path.display())))
    }
}

/// A split's token file and its flags, appended together.
struct TokenFile {
    toks: AppendFile,
    flags: AppendFile,
    n: usize,
    loss: usize,
}

impl TokenFile {
    fn create(toks: PathBuf, flags: PathBuf) -> Result<Self> {
        Ok(TokenFile { toks: AppendFile::create(toks)?, flags: AppendFile::create(flags)?, n: 0, loss: 0 })
    }
    fn push(&mut self, (toks, flags): &(Vec<u32>, Vec<u8>)) -> Result<()> {
        let bytes: Vec<u8> = toks.iter().flat_map(|t| t.to_le_bytes()).collect();
        self.toks.write(&bytes)?;
        self.flags.write(flags)?;
        self.n += toks.len();
        self.loss += stages::loss_tokens(flags);
        Ok(())
    }
    /// The tokens written, and those in the loss.
    fn finish(self) -> Result<(usize, usize)> {
        self.toks.finish()?;
        self.flags.finish()?;
        Ok((self.n, self.loss))
    }
}

/// Prepare `job`'s data into `<run_dir>/data` in two streaming passes (see the module doc);
/// the shared stages (`stages`) write the report, the tokenizer and `meta.json`.
pub fn prepare(job: &DataJob, run_dir: &Path, log: &mut dyn FnMut(String)) -> Result<DataMeta> {
    let d = job.data;
    let dir = RunDir(run_dir).data();
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let seed = job.seed;
    let started = std::time::Instant::now();

    // Pass 1: split, filter, tokenizer sample.
    let mut f = Filter::new(&d.filter);
    // Per document: 0 kept, 1 + rule index when a filter removed it, HELD for held-out.
    let mut fate: Vec<u8> = Vec::new();
    let mut held_keys: HashSet<[u8; 32]> = HashSet::new();
    let mut sample: Vec<String> = Vec::new();
    let (mut sample_bytes, mut bytes_in, mut i) = (0usize, 0u64, 0u64);
    let cap = d.tokenizer_sample_mb << 20;
    let pb = crate::util::progress_bar("scan", 0, false);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>8} {human_pos} docs {per_sec} | {msg}")
            .expect("valid template"),
    );
    // Documents are inspected in batches across the cores (the rules that need no other
    // document, dedup keys, MinHash signatures), then decided in source order.
    enum Seen {
        Held([u8; 32]),
        Train(filter::Inspection),
    }
    let mut batch: Vec<(bool, String)> = Vec::with_capacity(BATCH);
    let mut decide = |batch: &mut Vec<(bool, String)>, f: &mut Filter| {
        let fr: &Filter = f;
        let seen = crate::util::par_map(batch, |(held, doc)| {
            if *held { Seen::Held(filter::dedup_key(doc)) } else { Seen::Train(fr.inspect(doc)) }
        });
        for ((_, doc), v) in batch.drain(..).zip(seen) {
            match v {
                Seen::Held(key) => {
                    held_keys.insert(key);
                    fate.push(HELD);
                }
                Seen::Train(v) => match f.decide(&doc, v) {
                    Some(rule) => fate.push(1 + rule as u8),
                    None => {
                        fate.push(0);
                        if sample_bytes < cap {
                            sample_bytes += doc.len();
                            sample.push(stages::sample_text(job, &doc).into_owned());
                        }
                    }
                },
            }
        }
    };
    let bad = source::for_each(job, &mut |doc| {
        bytes_in += doc.len() as u64;
        batch.push((held_out(seed, i, d.valid_fraction), doc));
        if batch.len() == BATCH {
            decide(&mut batch, &mut f);
        }
        i += 1;
        if i % 4096 == 0 {
            pb.set_position(i);
            pb.set_message(format!("{:.0} MB", bytes_in as f64 / 1e6));
        }
        Ok(())
    })?;
    decide(&mut batch, &mut f);
    pb.finish_and_clear();
    let n_docs = i;
    stages::log_bad_lines(&bad, log);
    let t_scan = started.elapsed().as_secs_f64();
    let tokenizer = stages::tokenizer(job, sample.iter().map(|s| s.as_str()))?;
    drop(sample);
    let t_tok = started.elapsed().as_secs_f64() - t_scan;

    // Pass 2: encode straight to disk.
    let rd = RunDir(run_dir);
    let mut train = TokenFile::create(rd.train_tokens(), rd.train_flags())?;
    let mut valid = TokenFile::create(rd.valid_tokens(), rd.valid_flags())?;
    let (mut train_docs, mut valid_docs, mut copies, mut j) = (0usize, 0usize, 0usize, 0u64);
    let mut report = f.report;
    let pb = crate::util::progress_bar("encode", n_docs, false);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {human_pos}/{human_len} docs {per_sec} | ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    // Documents are encoded in batches across the cores, then written in source order.
    let mut batch: Vec<(u8, String)> = Vec::with_capacity(BATCH);
    let mut flush = |batch: &mut Vec<(u8, String)>, report: &mut filter::FilterReport| -> Result<()> {
        let encoded = crate::util::par_map(batch, |(_, doc)| stages::encode(d, &tokenizer, doc))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        for ((rule, doc), toks) in batch.drain(..).zip(encoded) {
            if rule == HELD {
                valid_docs += 1;
                valid.push(&toks)?;
            } else if rule == 0 {
                if held_keys.contains(&filter::dedup_key(&doc)) {
                    copies += 1;
                } else {
                    train_docs += 1;
                    train.push(&toks)?;
                }
            } else {
                // Removed by a filter: counted in its rule's tokens for the report.
                report.rules[rule as usize - 1].removed_tokens += toks.0.len();
            }
        }
        Ok(())
    };
    source::for_each(job, &mut |doc| {
        let idx = j;
        j += 1;
        if idx % 4096 == 0 {
            pb.set_position(idx);
        }
        if idx >= n_docs {
            return Err(Error::input("the data source changed between the two streaming passes"));
        }
        batch.push((fate[idx as usize], doc));
        if batch.len() == BATCH {
            flush(&mut batch, &mut report)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut report)?;
    pb.finish_and_clear();
    if j != n_docs {
        return Err(Error::input("the data source changed between the two streaming passes"));
    }
    stages::log_held_out_copies(copies, log);
    let ((train_tokens, train_loss_tokens), (valid_tokens, valid_loss_tokens)) = (train.finish()?, valid.finish()?);
    stages::report(job, &mut report, train_tokens, valid_tokens, log)?;
    let total = started.elapsed().as_secs_f64();
    log(format!(
        "streamed {:.1} MB in {total:.1} s ({:.1} MB/s): scan + filters {t_scan:.1} s, tokenizer {t_tok:.1} s, encoding {:.1} s",
        bytes_in as f64 / 1e6,
        bytes_in as f64 / 1e6 / total,
        total - t_scan - t_tok
    ));
    let n = Counts { train_docs, valid_docs, train_tokens, valid_tokens, train_loss_tokens, valid_loss_tokens };
    stages::commit(run_dir, &report, &bad, &tokenizer, n, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed split, filters and token files equal what the in-memory filter and the
    /// saved tokenizer give for the same documents.
    #[test]
    fn streaming_preparation_matches_the_definition() {
        let dir = std::env::temp_dir().join(format!("distill-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut docs = crate::data::synth::generate(3, 400);
        for k in 0..6 {
            let dup = docs[10 + k].clone();
            docs.insert(50 + 20 * k, dup); // exact duplicates
            docs.insert(60 + 20 * k, "@@@ ### $$$ %%% ^^^ &&& *** !!! ((( )))".into()); // symbol noise
        }
        let mut text: Vec<u8> = docs.join("\n\n").into_bytes();
        text.extend(b"\n\nbroken \xff line\n");
        let corpus = dir.join("corpus.txt");
        std::fs::write(&corpus, &text).unwrap();
        let recipe_text = format!(
            r#"
[run]
name = "s"
seed = 5
out_dir = "{out}"
[data]
source = "text"
paths = ["{corpus}"]
seq_len = 16
valid_fraction = 0.1
streaming = true
[data.filter]
dedup = "minhash"
[tokenizer]
vocab_size = 300
[teacher.model]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
[student.model]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
"#,
            out = dir.display(),
            corpus = corpus.display()
        );
        let p = dir.join("r.toml");
        std::fs::write(&p, recipe_text).unwrap();
        let recipe = crate::recipe::Recipe::load(&p, &[]).unwrap();
        let run = dir.join("s");
        let job = crate::data::DataJob::new(&recipe.data, &recipe.tokenizer, recipe.run.seed);
        let prepared = crate::data::prepare(&job, &run, &mut |_| {}).unwrap();
        assert_eq!(prepared.meta.bad_lines, 1, "the invalid UTF-8 line is reported and skipped");
        // The reference: read the same documents, split by the same hash, filter in memory.
        let (all, _) = source::load(&job).unwrap();
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for (i, d) in all.into_iter().enumerate() {
            if held_out(5, i as u64, 0.1) { valid.push(d) } else { train.push(d) }
        }
        let held: HashSet<[u8; 32]> = valid.iter().map(|d| filter::dedup_key(d)).collect();
        let (kept, report, _) = filter::apply(train, &recipe.data.filter);
        let streamed: serde_json::Value = crate::util::read_json(&run.join("data/filter_report.json")).unwrap();
        for (a, b) in report.rules.iter().zip(streamed["filter"]["rules"].as_array().unwrap()) {
            assert_eq!(a.removed_docs as u64, b["removed_docs"].as_u64().unwrap(), "rule {}", a.rule);
        }
        assert!(report.rules.iter().map(|r| r.removed_docs).sum::<usize>() >= 1, "the noise is removed");
        let kept: Vec<String> = kept.into_iter().filter(|d| !held.contains(&filter::dedup_key(d))).collect();
        let tok = &prepared.tokenizer;
        let stream = |ds: &[String]| -> Vec<u32> { ds.iter().flat_map(|d| tok.encode_doc(d).unwrap()).collect() };
        assert_eq!(prepared.meta.train_docs, kept.len());
        assert_eq!(prepared.meta.valid_docs, valid.len());
        assert!(valid.len() > 20 && valid.len() < 70, "about 10% held out: {}", valid.len());
        assert_eq!(&prepared.train[..], &stream(&kept)[..]);
        assert_eq!(&prepared.valid[..], &stream(&valid)[..]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
