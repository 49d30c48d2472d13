//! A run's use of its teacher cache (`teacher.logits = "cache"`): open it without loading or
//! hashing the teacher when it is offline (made from the teacher the recipe names, with its
//! held-out loss on this run's split), or build it from the loaded teacher first.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::Device;

use super::teacher::{Teacher, dtype_name};
use crate::data::RunData;
use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::eval::{EvalResult, evaluate_or_stop};
use crate::model::Decoder;
use crate::recipe::{LogitsSource, Recipe};
use crate::teacher::cache::{self, CacheReader};
use crate::teacher::codec::TailMode;

/// The teacher's held-out loss as its cache recorded it, when it was evaluated on this run's
/// held-out split (same tokens and seq_len, by hash).
pub fn cached_held_out(m: &cache::Manifest, valid: &Packed, seq_len: usize) -> Option<EvalResult> {
    let h = m.teacher.held_out.as_ref()?;
    (h.valid_hash == cache::data_hash(valid, seq_len)).then(|| EvalResult {
        loss: h.loss,
        ppl: h.loss.exp(),
        tokens: h.tokens,
    })
}

/// The run's cache manifest when the teacher need not be loaded nor hashed: teacher.logits =
/// "cache", the cache exists, it was made from the teacher the recipe names (kind and path,
/// and its files, where they still exist, have the sizes and modification times recorded at
/// build time; otherwise the teacher is hashed as before), and it holds the teacher's loss on
/// this run's held-out split. Data, tokenizer and dtype are checked when it is opened.
pub fn offline(recipe: &Recipe, dir: &Path, d: &RunData) -> Result<Option<cache::Manifest>> {
    let path = recipe.cache_dir();
    if recipe.teacher.logits != LogitsSource::Cache || !CacheReader::exists(&path) {
        return Ok(None);
    }
    let m = cache::read_manifest(&path)?;
    let teacher = Teacher::of(recipe, dir);
    if m.teacher.source != teacher.source() || cached_held_out(&m, &d.valid, recipe.data.seq_len).is_none() {
        return Ok(None);
    }
    // A folder that is gone is trusted to be the recorded teacher; one that is there but
    // changed is hashed (the long way), which refuses the cache if the weights differ.
    let now = teacher.files().ok().and_then(|f| cache::stamps(&f));
    Ok(match now {
        Some(s) if s != m.teacher.files => None,
        _ => Some(m),
    })
}

fn expect<'a>(
    recipe: &Recipe,
    d: &'a RunData,
    vocab: usize,
    teacher_hash: &'a str,
    teacher_dtype: &'a str,
    data_hash: &'a str,
) -> cache::Expect<'a> {
    cache::Expect {
        vocab_size: vocab,
        seq_len: recipe.data.seq_len,
        n_rows: d.train.n_rows(),
        tokenizer_hash: &d.tok_hash,
        teacher_hash,
        teacher_dtype,
        data_hash,
    }
}

/// Open the cache of an offline teacher (see [`offline`]).
pub fn open_offline(recipe: &Recipe, d: &RunData, m: &cache::Manifest) -> Result<CacheReader> {
    let dh = cache::data_hash(&d.train, recipe.data.seq_len);
    let dt = dtype_name(recipe.teacher.dtype);
    let reader =
        CacheReader::open(&recipe.cache_dir(), &expect(recipe, d, m.id.vocab_size, &m.id.teacher_hash, &dt, &dh))?;
    check_settings(recipe, &reader)?;
    Ok(reader)
}

/// The cache holds what the recipe's loss needs (k, codec, temperature).
fn check_settings(recipe: &Recipe, reader: &CacheReader) -> Result<()> {
    let c = &recipe.cache;
    let have = &reader.manifest.id;
    if have.k != c.k
        || have.values != c.values
        || (c.tail == TailMode::Other && reader.temperature_index(recipe.distill.temperature).is_none())
    {
        return Err(Error::input(format!(
            "teacher cache {} holds k = {} ({:?}, temperatures {:?}); the recipe asks for k = {} ({:?}, temperature {}): delete it or set cache.path to another directory",
            recipe.cache_dir().display(),
            have.k,
            have.values,
            have.temperatures,
            c.k,
            c.values,
            recipe.distill.temperature
        )));
    }
    Ok(())
}

/// Open the run's teacher cache, building it from the loaded `teacher` first if it does not
/// exist yet.
#[allow(clippy::too_many_arguments)]
pub fn open_or_build(
    recipe: &Recipe,
    dir: &Path,
    teacher: &Decoder,
    d: &RunData,
    device: &Device,
    quiet: bool,
    stop: &AtomicBool,
    log: &mut dyn FnMut(String),
) -> Result<CacheReader> {
    let c = &recipe.cache;
    let vocab = teacher.config.vocab_size;
    if c.k > vocab {
        return Err(Error::input(format!("cache.k ({}) exceeds the teacher's vocabulary ({vocab})", c.k)));
    }
    let mut temperatures = vec![1.0];
    if recipe.distill.temperature != 1.0 {
        temperatures.push(recipe.distill.temperature);
    }
    let t0 = Instant::now();
    let who = Teacher::of(recipe, dir);
    let files = who.files()?;
    let th = cache::hash_files(&files)?;
    let id = cache::CacheIdentity {
        format_version: cache::FORMAT_VERSION,
        vocab_size: vocab,
        k: c.k,
        values: c.values,
        temperatures,
        seq_len: recipe.data.seq_len,
        n_rows: d.train.n_rows(),
        rows_per_shard: c.rows_per_shard,
        tokenizer_hash: d.tok_hash.clone(),
        teacher_hash: th,
        teacher_dtype: dtype_name(recipe.teacher.dtype),
        data_hash: cache::data_hash(&d.train, recipe.data.seq_len),
    };
    let hashing_s = t0.elapsed().as_secs_f64();
    let path = recipe.cache_dir();
    let expect = expect(recipe, d, vocab, &id.teacher_hash, &id.teacher_dtype, &id.data_hash);
    if !CacheReader::exists(&path) {
        log(format!("caching the teacher's top-{} logits ({:?}) into {}", c.k, c.values, path.display()));
        // What a run needs later without the teacher: its tokenizer (data preparation with
        // tokenizer.kind = "teacher"), size and held-out loss (the summary).
        std::fs::create_dir_all(&path).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
        crate::util::copy_atomic(&crate::run_dir::RunDir(dir).tokenizer(), &path.join("tokenizer.json"))?;
        let t_eval = Instant::now();
        let ev =
            evaluate_or_stop(teacher, &d.valid, recipe.optim.batch_size, device, stop, "the teacher's evaluation")?;
        let eval_s = t_eval.elapsed().as_secs_f64();
        let record = cache::TeacherRecord {
            source: who.source(),
            files: cache::stamps(&files).unwrap_or_default(),
            matmul_params: teacher.config.matmul_params(),
            held_out: Some(cache::HeldOut {
                valid_hash: cache::data_hash(&d.valid, recipe.data.seq_len),
                batch_size: recipe.optim.batch_size,
                loss: ev.loss,
                tokens: ev.tokens,
            }),
        };
        let t_build = Instant::now();
        let m = cache::build(
            &path,
            &id,
            &d.train,
            cache::decoder_select(teacher, &d.train, device, &id),
            &cache::BuildOptions { batch_size: recipe.optim.batch_size, quiet, stop, teacher: record },
        )?;
        let build_s = t_build.elapsed().as_secs_f64();
        log(format!(
            "teacher cache: {} tokens, {:.1} bytes/token ({:.2} MB) in {:.1} s: {:.0} tokens/s building ({:.1} s), before it hashing the teacher and data {:.1} s and the held-out evaluation {:.1} s",
            m.tokens,
            m.bytes_per_token(),
            m.bytes as f64 / 1e6,
            t0.elapsed().as_secs_f64(),
            m.tokens as f64 / build_s,
            build_s,
            hashing_s,
            eval_s
        ));
        if m.skipped > 0 {
            log(format!(
                "teacher cache: {} positions outside the loss not stored, about {:.2} MB saved ({:.0}% of a cache of every position)",
                m.skipped,
                m.skipped as f64 * m.bytes_per_token() / 1e6,
                100.0 * m.skipped as f64 / (m.skipped + m.tokens).max(1) as f64
            ));
        }
    }
    let reader = CacheReader::open(&path, &expect)?;
    check_settings(recipe, &reader)?;
    Ok(reader)
}
