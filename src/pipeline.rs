//! The whole run, in pipeline order: data -> teacher -> student -> eval -> export. Every stage
//! leaves a completion marker in the run directory (`data/meta.json`, `*/final/model.json`,
//! `summary.json`), so `resume` re-enters the run at the first unfinished stage, and an
//! unfinished training stage continues from its latest checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;

use crate::data::{self, pack::Packed};
use crate::error::{Error, Result};
use crate::eval::{EvalResult, evaluate};
use crate::kd_loss::KdConfig;
use crate::model::{Decoder, DecoderConfig, store};
use crate::quant::int8::fake_quant_model;
use crate::recipe::{Backend, LogitsSource, Recipe, RowOrder, Schedule, TailMode, TeacherDtype, TeacherKind};
use crate::curriculum::TeacherScores;
use crate::teacher::cache::{self, CacheReader};
use crate::train::{CurriculumRun, Phase, TeacherSource, TrainJob, metrics, train};

pub struct RunOptions<'a> {
    pub stop: &'a AtomicBool,
    /// Simulated crash for tests: stop the given phase after this many steps.
    pub stop_after: Option<(Phase, usize)>,
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub teacher: EvalResult,
    pub student: EvalResult,
    pub student_int8: EvalResult,
    pub teacher_params: usize,
    pub student_params: usize,
    pub teacher_tok_per_s: f64,
    pub student_tok_per_s: f64,
    pub wall_s: f64,
    pub exports: Vec<(String, u64)>,
}

pub const RESOLVED: &str = "recipe.resolved.toml";

pub fn device_for(backend: Backend) -> Device {
    match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        // Validation refuses backends that are not compiled in.
        _ => Device::flex(),
    }
}

/// Start a run (or continue it, when its directory holds the same resolved recipe).
pub fn run(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    let dir = recipe.run_dir();
    claim_run_dir(recipe, &dir)?;
    execute(recipe, &dir, opts, log)
}

/// Write the resolved recipe into a new run directory, or check that an existing one holds
/// the same recipe.
fn claim_run_dir(recipe: &Recipe, dir: &Path) -> Result<()> {
    let resolved = dir.join(RESOLVED);
    let text = recipe.to_toml();
    if resolved.is_file() {
        let old = crate::error::read_to_string(&resolved)?;
        if old != text {
            return Err(Error::input(format!(
                "{} already holds a run with a different recipe: continue it with `distill resume {}`, or choose another run.name (--set run.name=...)",
                dir.display(), dir.display())));
        }
    } else {
        std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
        crate::util::write_atomic(&resolved, text.as_bytes())?;
    }
    Ok(())
}

/// Continue the run in `dir` from its resolved recipe.
pub fn resume(dir: &Path, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    let recipe = load_run_recipe(dir)?;
    execute(&recipe, dir, opts, log)
}

pub fn load_run_recipe(dir: &Path) -> Result<Recipe> {
    let p = dir.join(RESOLVED);
    if !p.is_file() {
        return Err(Error::input(format!("{}: not a run directory (no {RESOLVED})", dir.display())));
    }
    let mut recipe = Recipe::load(&p, &[])?;
    // The directory may have been moved since: it is where the run lives now.
    recipe.run.out_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    recipe.run.name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    Ok(recipe)
}

/// The prepared data of a run, packed into rows.
struct RunData {
    train: Packed,
    valid: Packed,
    tok_hash: String,
    vocab: usize,
}

fn prepare_data(recipe: &Recipe, dir: &Path, log: &mut dyn FnMut(String)) -> Result<RunData> {
    let prepared = data::prepare(recipe, dir, log)?;
    let seq = recipe.data.seq_len;
    Ok(RunData {
        train: Packed::build(prepared.train, seq, prepared.tokenizer.eos_id, recipe.data.packing),
        valid: Packed::build(prepared.valid, seq, prepared.tokenizer.eos_id, recipe.data.packing),
        tok_hash: prepared.meta.tokenizer_hash.clone(),
        vocab: prepared.meta.vocab_size,
    })
}

/// Load the frozen teacher, or pretrain it (resuming) when the recipe says so.
fn obtain_teacher(recipe: &Recipe, dir: &Path, d: &RunData, device: &Device, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Decoder> {
    let tok_hash = &d.tok_hash;
    let vocab = d.vocab;
    let teacher = match recipe.teacher.kind {
        TeacherKind::Hf => {
            let p = recipe.teacher.path.as_ref().expect("validated");
            let (t, tok) = crate::teacher::hf::load(p, device, recipe.teacher.dtype.dtype())?;
            if &tok.hash() != tok_hash {
                return Err(Error::input(format!(
                    "teacher {}: its tokenizer.json differs from the one the data in {} was prepared with: the vocabularies must be identical",
                    p.display(), dir.display())));
            }
            log(format!("teacher: {} ({} parameters in matmuls)", p.display(), t.config.matmul_params()));
            t
        }
        TeacherKind::Checkpoint => {
            let p = recipe.teacher.path.as_ref().expect("validated");
            let (t, hash) = store::load(p, device)?;
            if &hash != tok_hash || t.config.vocab_size != vocab {
                return Err(Error::input(format!(
                    "teacher {} was trained with a different tokenizer (vocab {}) than the data (vocab {vocab}, {}): the vocabularies must be identical",
                    p.display(), t.config.vocab_size, dir.join("tokenizer.json").display())));
            }
            t
        }
        TeacherKind::Pretrain => stage(dir, Phase::Teacher, tok_hash, device, log, |stop_after| {
            let teacher_cfg = DecoderConfig { vocab_size: vocab, shape: recipe.teacher.shape() };
            let job = TrainJob {
                phase: Phase::Teacher, dir: dir.join("teacher"), metrics: dir.join("metrics.jsonl"),
                model: teacher_cfg.clone(), optim: &recipe.teacher.optim, teacher: TeacherSource::None,
                kd: KdConfig { alpha: 1.0, temperature: 1.0, chunk_tokens: recipe.distill.chunk_tokens, divergence: crate::kd_loss::Divergence::ForwardKl },
                alpha_end: None, temperature_end: None, curriculum: None,
                train: &d.train, valid: &d.valid, seed: recipe.run.seed,
                checkpoint: &recipe.checkpoint, eval: &recipe.eval, stop: opts.stop, stop_after, quiet: opts.quiet,
            };
            train(&job, device)
        }, opts)?,
    };
    if recipe.data.seq_len > teacher.config.shape.max_seq_len {
        return Err(Error::input(format!(
            "data.seq_len ({}) exceeds the teacher's context ({} tokens)", recipe.data.seq_len, teacher.config.shape.max_seq_len)));
    }
    Ok(match recipe.teacher.dtype {
        TeacherDtype::F32 => teacher,
        _ if teacher.config.shape.layer_pattern.contains('M') => {
            return Err(Error::input("teacher.dtype: half precision is supported for attention-only teachers; this teacher has Mamba-2 layers"));
        }
        half => teacher.cast(half.dtype()),
    })
}

/// The files that make the teacher (weights and shape), in hashing order.
fn teacher_files(recipe: &Recipe, dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(match recipe.teacher.kind {
        TeacherKind::Pretrain => vec![dir.join("teacher/final/model.json"), dir.join("teacher/final/model.bpk")],
        TeacherKind::Checkpoint => {
            let p = recipe.teacher.path.as_ref().expect("validated");
            vec![p.join("model.json"), p.join("model.bpk")]
        }
        TeacherKind::Hf => {
            let p = recipe.teacher.path.as_ref().expect("validated");
            let mut w: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::input(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            w.sort();
            w.insert(0, p.join("config.json"));
            w
        }
    })
}

/// A digest of the teacher's weights and shape, as files on disk.
fn teacher_hash(recipe: &Recipe, dir: &Path) -> Result<String> {
    cache::hash_files(&teacher_files(recipe, dir)?)
}

/// The teacher as the recipe names it (recorded in its cache).
fn teacher_source(recipe: &Recipe, dir: &Path) -> String {
    match (recipe.teacher.kind, &recipe.teacher.path) {
        (TeacherKind::Hf, Some(p)) => format!("hf {}", p.display()),
        (TeacherKind::Checkpoint, Some(p)) => format!("checkpoint {}", p.display()),
        _ => format!("pretrain {}", dir.join("teacher/final").display()),
    }
}

fn dtype_name(d: TeacherDtype) -> String {
    format!("{d:?}").to_lowercase()
}

/// The teacher's held-out loss as its cache recorded it, when it was evaluated on this run's
/// held-out split (same tokens and seq_len, by hash).
fn cached_held_out(m: &cache::Manifest, valid: &Packed, seq_len: usize) -> Option<EvalResult> {
    let h = m.teacher.held_out.as_ref()?;
    (h.valid_hash == cache::data_hash(valid, seq_len)).then(|| EvalResult { loss: h.loss, ppl: h.loss.exp(), tokens: h.tokens })
}

/// The run's cache manifest when the teacher need not be loaded nor hashed: teacher.logits =
/// "cache", the cache exists, it was made from the teacher the recipe names (kind and path,
/// and its files, where they still exist, have the sizes and modification times recorded at
/// build time; otherwise the teacher is hashed as before), and it holds the teacher's loss on
/// this run's held-out split. Data, tokenizer and dtype are checked when it is opened.
fn offline_cache(recipe: &Recipe, dir: &Path, d: &RunData) -> Result<Option<cache::Manifest>> {
    let path = recipe.cache_dir();
    if recipe.teacher.logits != LogitsSource::Cache || !CacheReader::exists(&path) {
        return Ok(None);
    }
    let m = cache::read_manifest(&path)?;
    if m.teacher.source != teacher_source(recipe, dir) || cached_held_out(&m, &d.valid, recipe.data.seq_len).is_none() {
        return Ok(None);
    }
    // A folder that is gone is trusted to be the recorded teacher; one that is there but
    // changed is hashed (the long way), which refuses the cache if the weights differ.
    let now = teacher_files(recipe, dir).ok().and_then(|f| cache::stamps(&f));
    Ok(match now {
        Some(s) if s != m.teacher.files => None,
        _ => Some(m),
    })
}

fn cache_expect<'a>(recipe: &Recipe, d: &'a RunData, vocab: usize, teacher_hash: &'a str, teacher_dtype: &'a str, data_hash: &'a str) -> cache::Expect<'a> {
    cache::Expect {
        vocab_size: vocab, seq_len: recipe.data.seq_len, n_rows: d.train.n_rows(),
        tokenizer_hash: &d.tok_hash, teacher_hash, teacher_dtype, data_hash,
    }
}

/// Open the cache of an offline teacher (see `offline_cache`).
fn open_offline(recipe: &Recipe, d: &RunData, m: &cache::Manifest) -> Result<CacheReader> {
    let dh = cache::data_hash(&d.train, recipe.data.seq_len);
    let dt = dtype_name(recipe.teacher.dtype);
    let reader = CacheReader::open(&recipe.cache_dir(), &cache_expect(recipe, d, m.id.vocab_size, &m.id.teacher_hash, &dt, &dh))?;
    check_cache_settings(recipe, &reader)?;
    Ok(reader)
}

/// The cache holds what the recipe's loss needs (k, codec, temperature).
fn check_cache_settings(recipe: &Recipe, reader: &CacheReader) -> Result<()> {
    let c = &recipe.cache;
    let have = &reader.manifest.id;
    if have.k != c.k || have.values != c.values || (c.tail == TailMode::Other && reader.temperature_index(recipe.distill.temperature).is_none()) {
        return Err(Error::input(format!(
            "teacher cache {} holds k = {} ({:?}, temperatures {:?}); the recipe asks for k = {} ({:?}, temperature {}): delete it or set cache.path to another directory",
            recipe.cache_dir().display(), have.k, have.values, have.temperatures, c.k, c.values, recipe.distill.temperature)));
    }
    Ok(())
}

/// Open the run's teacher cache, building it first if it does not exist yet.
fn teacher_cache(recipe: &Recipe, dir: &Path, teacher: &Decoder, d: &RunData, device: &Device, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<CacheReader> {
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
    let files = teacher_files(recipe, dir)?;
    let th = cache::hash_files(&files)?;
    let id = cache::CacheIdentity {
        format_version: cache::FORMAT_VERSION, vocab_size: vocab, k: c.k, values: c.values, temperatures,
        seq_len: recipe.data.seq_len, n_rows: d.train.n_rows(), rows_per_shard: c.rows_per_shard,
        tokenizer_hash: d.tok_hash.clone(), teacher_hash: th, teacher_dtype: dtype_name(recipe.teacher.dtype),
        data_hash: cache::data_hash(&d.train, recipe.data.seq_len),
    };
    let path = recipe.cache_dir();
    let expect = cache_expect(recipe, d, vocab, &id.teacher_hash, &id.teacher_dtype, &id.data_hash);
    if !CacheReader::exists(&path) {
        log(format!("caching the teacher's top-{} logits ({:?}) into {}", c.k, c.values, path.display()));
        // What a run needs later without the teacher: its tokenizer (data preparation with
        // tokenizer.kind = "teacher"), size and held-out loss (the summary).
        std::fs::create_dir_all(&path).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
        crate::util::copy_atomic(&dir.join("tokenizer.json"), &path.join("tokenizer.json"))?;
        let ev = evaluate(teacher, &d.valid, recipe.optim.batch_size, None, device);
        let record = cache::TeacherRecord {
            source: teacher_source(recipe, dir), files: cache::stamps(&files).unwrap_or_default(),
            matmul_params: teacher.config.matmul_params(),
            held_out: Some(cache::HeldOut { valid_hash: cache::data_hash(&d.valid, recipe.data.seq_len), batch_size: recipe.optim.batch_size, loss: ev.loss, tokens: ev.tokens }),
        };
        let m = cache::build(&path, &id, &d.train, cache::decoder_select(teacher, &d.train, device, &id),
            &cache::BuildOptions { batch_size: recipe.optim.batch_size, quiet: opts.quiet, stop: opts.stop, teacher: record })?;
        log(format!("teacher cache: {} tokens, {:.1} bytes/token ({:.2} MB) in {:.1} s",
            m.tokens, m.bytes_per_token(), m.bytes as f64 / 1e6, t0.elapsed().as_secs_f64()));
    }
    let reader = CacheReader::open(&path, &expect)?;
    check_cache_settings(recipe, &reader)?;
    Ok(reader)
}

/// `distill cache-teacher`: prepare the data and the teacher of a recipe and write its cache.
pub fn cache_teacher(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<cache::Manifest> {
    let dir = recipe.run_dir();
    claim_run_dir(recipe, &dir)?;
    let device = device_for(recipe.run.backend);
    let d = prepare_data(recipe, &dir, log)?;
    if let Some(m) = offline_cache(recipe, &dir, &d)? {
        return Ok(open_offline(recipe, &d, &m)?.manifest);
    }
    let teacher = obtain_teacher(recipe, &dir, &d, &device, opts, log)?;
    Ok(teacher_cache(recipe, &dir, &teacher, &d, &device, opts, log)?.manifest)
}

fn execute(recipe: &Recipe, dir: &Path, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    let wall = Instant::now();
    let device = device_for(recipe.run.backend);
    let d = prepare_data(recipe, dir, log)?;
    let metrics_path = dir.join("metrics.jsonl");
    let student_done = dir.join("student/final/model.json").is_file();
    // A cached teacher is offline: with a matching cache it is neither loaded nor hashed.
    let offline = offline_cache(recipe, dir, &d)?;
    let teacher = match &offline {
        Some(_) => None,
        None => Some(obtain_teacher(recipe, dir, &d, &device, opts, log)?),
    };
    // The student predicts over the teacher's output space (an HF model may pad its
    // vocabulary beyond the tokenizer's).
    let (vocab, teacher_params) = match (&teacher, &offline) {
        (Some(t), _) => (t.config.vocab_size, t.config.matmul_params()),
        (None, Some(m)) => (m.id.vocab_size, m.teacher.matmul_params),
        (None, None) => unreachable!("the teacher is loaded unless its cache is offline"),
    };
    let student_cfg = DecoderConfig { vocab_size: vocab, shape: recipe.student.shape() };
    let reader = match (recipe.teacher.logits, &teacher, &offline) {
        (LogitsSource::Cache, _, _) if student_done => None,
        (LogitsSource::Cache, Some(t), _) => Some(Arc::new(teacher_cache(recipe, dir, t, &d, &device, opts, log)?)),
        (LogitsSource::Cache, None, Some(m)) => Some(Arc::new(open_offline(recipe, &d, m)?)),
        _ => None,
    };
    let source = match (&reader, &teacher) {
        (Some(r), _) => TeacherSource::Cache { reader: r.clone(), tail: recipe.cache.tail },
        (None, Some(t)) if !student_done => TeacherSource::Online(t),
        _ => TeacherSource::None,
    };
    let c = &recipe.curriculum;
    let curriculum = if student_done || (c.schedule == Schedule::None && c.order == RowOrder::Random) {
        None
    } else if c.schedule == Schedule::SelfPaced {
        Some(CurriculumRun { cfg: c.clone(), pct: None, first_epoch: None })
    } else {
        // The cache carries the teacher's identity; hashing the teacher's files again (gigabytes
        // for a real model) is only needed for an online teacher's scores.
        let from = match &source {
            TeacherSource::Cache { reader, .. } => TeacherScores::Cache(reader),
            _ => TeacherScores::Online {
                teacher: teacher.as_ref().expect("an online teacher is loaded"),
                hash: if c.score.needs_teacher() { teacher_hash(recipe, dir)? } else { String::new() },
                batch: recipe.optim.batch_size,
                device: &device,
            },
        };
        let scores = crate::curriculum::scores(dir, c.score, &d.train, &from)?;
        let pct = crate::curriculum::percentiles(&scores);
        let first_epoch = (c.order == RowOrder::EasyToHard).then(|| {
            let mut order: Vec<usize> = (0..pct.len()).collect();
            order.sort_by(|&a, &b| pct[a].total_cmp(&pct[b]));
            order
        });
        log(format!("curriculum: {:?} schedule on {:?} scores of {} rows ({} order)", c.schedule, c.score, pct.len(),
            if first_epoch.is_some() { "easy-to-hard" } else { "random" }));
        Some(CurriculumRun { cfg: c.clone(), pct: Some(pct), first_epoch })
    };
    let student = stage(dir, Phase::Student, &d.tok_hash, &device, log, |stop_after| {
        let job = TrainJob {
            phase: Phase::Student, dir: dir.join("student"), metrics: metrics_path.clone(),
            model: student_cfg.clone(), optim: &recipe.optim, teacher: source,
            kd: KdConfig { alpha: recipe.distill.alpha, temperature: recipe.distill.temperature, chunk_tokens: recipe.distill.chunk_tokens, divergence: recipe.distill.divergence() },
            alpha_end: recipe.distill.alpha_end, temperature_end: recipe.distill.temperature_end, curriculum,
            train: &d.train, valid: &d.valid, seed: recipe.run.seed,
            checkpoint: &recipe.checkpoint, eval: &recipe.eval, stop: opts.stop, stop_after, quiet: opts.quiet,
        };
        train(&job, &device)
    }, opts)?;
    metrics::plot(&metrics_path, &dir.join("loss.svg"))?;
    let valid_data = &d.valid;

    log("evaluating on the held-out split".into());
    // The teacher's held-out loss was evaluated when its cache was built (on these tokens).
    let cached = offline.as_ref().or(reader.as_ref().map(|r| &r.manifest)).and_then(|m| cached_held_out(m, valid_data, recipe.data.seq_len));
    let te = match (cached, &teacher) {
        (Some(e), _) => e,
        (None, Some(t)) => evaluate(t, valid_data, recipe.optim.batch_size, None, &device),
        (None, None) => unreachable!("an offline cache holds the held-out loss"),
    };
    let se = evaluate(&student, valid_data, recipe.optim.batch_size, None, &device);
    let q8 = evaluate(&fake_quant_model(&student), valid_data, recipe.optim.batch_size, None, &device);
    let mut exports = Vec::new();
    for f in &recipe.export.formats {
        let (p, size) = crate::export::native::export(&student, *f, &dir.join("export"), &dir.join("tokenizer.json"))?;
        exports.push((p.display().to_string(), size));
    }
    let rows = metrics::read(&metrics_path);
    let tok_s = |phase: &str| {
        let last = rows.iter().rev().find(|v| v["phase"] == phase);
        last.and_then(|v| Some(v["tokens"].as_f64()? / v["elapsed_s"].as_f64()?)).unwrap_or(0.0)
    };
    let summary = Summary {
        teacher: te, student: se, student_int8: q8,
        teacher_params, student_params: student.config.matmul_params(),
        teacher_tok_per_s: tok_s("teacher"), student_tok_per_s: tok_s("student"),
        wall_s: wall.elapsed().as_secs_f64(), exports,
    };
    crate::util::write_json_atomic(&dir.join("summary.json"), &summary)?;
    log(summary_table(&summary, valid_data));
    Ok(summary)
}

/// Held-out loss of the teacher, the student, and the student's int8 round trip (the weights
/// the int8 export holds), each over the whole split.
pub fn evaluate_models(teacher: &Decoder, student: &Decoder, valid: &Packed, batch_size: usize, device: &Device) -> [EvalResult; 3] {
    [
        evaluate(teacher, valid, batch_size, None, device),
        evaluate(student, valid, batch_size, None, device),
        evaluate(&fake_quant_model(student), valid, batch_size, None, device),
    ]
}

/// Load a finished model of `phase`, or train it and freeze it into `<phase>/final`.
fn stage(
    dir: &Path,
    phase: Phase,
    tok_hash: &str,
    device: &Device,
    log: &mut dyn FnMut(String),
    train_fn: impl FnOnce(Option<usize>) -> Result<Decoder>,
    opts: &RunOptions,
) -> Result<Decoder> {
    let fin: PathBuf = dir.join(phase.name()).join("final");
    if fin.join("model.json").is_file() {
        log(format!("{}: already trained, loading {}", phase.name(), fin.display()));
        return Ok(store::load(&fin, device)?.0);
    }
    let stop_after = opts.stop_after.and_then(|(p, n)| (p == phase).then_some(n));
    let model = train_fn(stop_after)?;
    // The tokenizer travels with the weights, so a final directory is a usable teacher alone.
    std::fs::create_dir_all(&fin).map_err(|e| Error::runtime(format!("{}: {e}", fin.display())))?;
    crate::util::copy_atomic(&dir.join("tokenizer.json"), &fin.join("tokenizer.json"))?;
    store::save(&fin, &model, tok_hash)?;
    Ok(model)
}

pub fn summary_table(s: &Summary, valid: &Packed) -> String {
    let mb = |n: u64| n as f64 / 1e6;
    let mut t = format!("held-out split: {} tokens\n", valid.n_tokens());
    // Training throughput; a loaded teacher was not trained in this run.
    let rate = |r: f64| if r > 0.0 { format!("{r:.0}") } else { "-".into() };
    t += &format!("{:<16} {:>12} {:>10} {:>12} {:>12}\n", "model", "params", "loss", "perplexity", "train tok/s");
    t += &format!("{:<16} {:>12} {:>10.4} {:>12.3} {:>12}\n", "teacher", s.teacher_params, s.teacher.loss, s.teacher.ppl, rate(s.teacher_tok_per_s));
    t += &format!("{:<16} {:>12} {:>10.4} {:>12.3} {:>12}\n", "student f32", s.student_params, s.student.loss, s.student.ppl, rate(s.student_tok_per_s));
    t += &format!("{:<16} {:>12} {:>10.4} {:>12.3}\n", "student int8", s.student_params, s.student_int8.loss, s.student_int8.ppl);
    for (p, size) in &s.exports {
        t += &format!("export: {p} ({:.2} MB)\n", mb(*size));
    }
    t += &format!("wall time: {:.1} s", s.wall_s);
    t
}
