//! `distill bench-cache`: the top-k teacher cache on a finished run: bytes per token, the KL
//! error against the full teacher for each k and value codec, and the reader's tokens/s.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;

use crate::data::pack::Packed;
use crate::error::Result;
use crate::kd_loss::Divergence;
use crate::teacher::cache::{self, CacheIdentity, CacheReader, divergence_online_and_cached};
use crate::teacher::codec::{TailMode, ValueCodec};

/// One line of the cache benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheBenchRow {
    pub k: usize,
    pub values: ValueCodec,
    pub bytes_per_token: f64,
    pub kl_online: f64,
    /// Relative error of the mean forward KL from the cache, "other" bucket and renormalized.
    pub rel_err_other: f64,
    pub rel_err_renormalize: f64,
    /// Tokens per second the reader decodes into loss targets (one thread).
    pub read_tok_per_s: f64,
}

/// Build caches of the first `rows` training rows of a finished run for each (k, codec), and
/// measure size, the KL error against the full teacher (the run's own student as the other
/// side) and the reader's speed.
pub fn cache_sweep(
    run_dir: &Path,
    ks: &[usize],
    codecs: &[ValueCodec],
    rows: usize,
    mut report: impl FnMut(&CacheBenchRow),
) -> Result<Vec<CacheBenchRow>> {
    let recipe = crate::pipeline::load_run_recipe(run_dir)?;
    let prepared = crate::data::load_prepared(run_dir)?;
    let seq = recipe.data.seq_len;
    let data = Packed::build(prepared.train, prepared.train_flags, seq, prepared.tokenizer.eos_id, recipe.data.packing);
    let data = data.prefix(rows.min(data.n_rows()));
    // The benchmark reports CPU numbers ("burn flex"), whatever backend the run trained on.
    let dev = Device::flex();
    let load = |w: &str| crate::model::store::load(&run_dir.join(w).join("final"), &dev).map(|m| m.0);
    let (teacher, student) = (load("teacher")?, load("student")?);
    let all: Vec<usize> = (0..data.n_rows()).collect();
    let logits_of = |m: &crate::model::Decoder| -> Vec<f32> {
        let f = cache::decoder_logits(m, &data, &dev);
        all.chunks(16).flat_map(f).collect()
    };
    let (tl, sl) = (logits_of(&teacher), logits_of(&student));
    let tau = recipe.distill.temperature;
    let scratch = run_dir.join("bench-cache");
    let mut out = Vec::new();
    for &k in ks {
        for &values in codecs {
            let _ = std::fs::remove_dir_all(&scratch);
            let id = CacheIdentity {
                format_version: cache::FORMAT_VERSION,
                vocab_size: teacher.config.vocab_size,
                k: k.min(teacher.config.vocab_size),
                values,
                temperatures: vec![tau],
                seq_len: seq,
                n_rows: data.n_rows(),
                rows_per_shard: 1024,
                tokenizer_hash: String::new(),
                teacher_hash: String::new(),
                teacher_dtype: String::new(),
                data_hash: String::new(),
            };
            let v = id.vocab_size;
            let stop = std::sync::atomic::AtomicBool::new(false);
            let tl_ref = &tl;
            let logits_of =
                |rs: &[usize]| rs.iter().flat_map(|&r| tl_ref[r * seq * v..(r + 1) * seq * v].to_vec()).collect();
            let m = cache::build(
                &scratch,
                &id,
                &data,
                cache::host_select(logits_of, &data, &id),
                &cache::BuildOptions { batch_size: 16, quiet: true, stop: &stop, teacher: Default::default() },
            )?;
            let expect = cache::Expect {
                vocab_size: v,
                seq_len: seq,
                n_rows: id.n_rows,
                tokenizer_hash: "",
                teacher_hash: "",
                teacher_dtype: "",
                data_hash: "",
            };
            let reader = CacheReader::open(&scratch, &expect)?;
            let d = Divergence::ForwardKl;
            let (on, other) =
                divergence_online_and_cached(&reader, &data, &all, &tl, &sl, tau, TailMode::Other, d, &dev)?;
            let (_, renorm) =
                divergence_online_and_cached(&reader, &data, &all, &tl, &sl, tau, TailMode::Renormalize, d, &dev)?;
            let t0 = Instant::now();
            let mut tokens = 0usize;
            while t0.elapsed().as_secs_f64() < 1.0 {
                for c in all.chunks(16) {
                    let keep: Vec<Vec<usize>> = c.iter().map(|&r| data.loss_positions(r)).collect();
                    let h = reader.batch(c, &keep, tau, TailMode::Other)?;
                    tokens += c.iter().map(|&r| data.row_len(r)).sum::<usize>();
                    std::hint::black_box(h);
                }
            }
            let row = CacheBenchRow {
                k: id.k,
                values,
                bytes_per_token: m.bytes_per_token(),
                kl_online: on,
                rel_err_other: (other - on).abs() / on,
                rel_err_renormalize: (renorm - on).abs() / on,
                read_tok_per_s: tokens as f64 / t0.elapsed().as_secs_f64(),
            };
            report(&row);
            out.push(row);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}

/// Bytes per token of the record format at a large vocabulary, on synthetic LM-like logits
/// (a handful of strong candidates over noise; the kept ids are then close to uniformly spread,
/// the worst case for the id code): the size side of the comparison with other formats.
pub fn cache_record_bytes(vocab: usize, k: usize, codec: ValueCodec, tokens: usize) -> f64 {
    use crate::teacher::bits::BitWriter;
    let mut rng = crate::rng::SplitMix(vocab as u64 ^ k as u64);
    let mut total = 0usize;
    let mut z = vec![0f32; vocab];
    for _ in 0..tokens {
        for x in z.iter_mut() {
            *x = ((rng.uniform() + rng.uniform() + rng.uniform() - 1.5) * 2.0) as f32;
        }
        for _ in 0..8 {
            z[rng.below(vocab)] += 6.0 + 3.0 * rng.uniform() as f32;
        }
        let mut w = BitWriter::default();
        cache::encode_token(&mut w, &z, k, codec, &[1.0]);
        w.align();
        total += w.bytes.len();
    }
    total as f64 / tokens as f64
}

/// The student trainer's mean tokens/s in a run (its `metrics.jsonl`): what the cache reader
/// has to keep up with. 0 when the run logged no student steps.
pub fn trainer_tok_per_s(run_dir: &Path) -> f64 {
    let rates = crate::train::metrics::read(&run_dir.join("metrics.jsonl"))
        .into_iter()
        .filter(|v| v.phase == "student")
        .map(|v| v.tok_per_s)
        .collect::<Vec<_>>();
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}
