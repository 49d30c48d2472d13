//! The whole run, in pipeline order: data -> teacher -> student -> eval -> export. Every stage
//! leaves a completion marker in the run directory (`data/meta.json`, `*/final/model.json`,
//! `summary.json`), so `resume` re-enters the run at the first unfinished stage, and an
//! unfinished training stage continues from its latest checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;

mod cached;
pub mod chat;
pub mod init;
mod student;
pub mod synth;
pub mod teacher;

use crate::data::{self, RunData, pack::Packed};
use crate::error::{Error, Result};
use crate::eval::{EvalResult, evaluate_or_stop};
use crate::kd_loss::KdConfig;
use crate::model::{Decoder, DecoderConfig, store};
use crate::quant::int8::fake_quant_model;
use crate::recipe::{Recipe, TokenizerKind};
use crate::run_dir::{RunDir, RunLock};
use crate::teacher::{TeacherSource, cache};
use crate::train::{Phase, TrainJob, metrics, train};
use student::StudentSetup;
use teacher::Teacher;

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

/// Kept here too: the CLI reaches the device through the pipeline.
pub use crate::device::device_for;

/// Start a run (or continue it, when its directory holds the same resolved recipe).
pub fn run(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    preflight(recipe)?;
    let dir = recipe.run_dir();
    let _lock = RunLock::acquire(&dir)?;
    claim_run_dir(recipe, &dir)?;
    recording_failure(&dir, || execute(recipe, &dir, opts, log))
}

/// `f`'s result, its error (not a stop) kept in the run's `FAILED` for `distill runs` and the
/// report; an earlier one is removed first.
fn recording_failure<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let failed = RunDir(dir).failure();
    let _ = std::fs::remove_file(&failed);
    let out = f();
    if let Err(e) = &out
        && !matches!(e, Error::Interrupted(_))
    {
        let _ = std::fs::write(&failed, format!("{e}\n"));
    }
    out
}

/// What the recipe's files must allow, checked before anything is written (recipe validation
/// reads no files): a GGUF export needs a tokenizer llama.cpp splits as we do. A tokenizer
/// trained here always is one; a given one (a file, or the teacher's) is read now rather
/// than refused after training. A file that is missing is left to the stage that reads it.
pub fn preflight(recipe: &Recipe) -> Result<()> {
    use crate::export::ExportFormat as F;
    let gguf = recipe.export.formats.iter().any(|f| matches!(f, F::GgufF16 | F::GgufQ8_0 | F::GgufQ4_0));
    let path = match recipe.tokenizer.kind {
        TokenizerKind::Train => None,
        TokenizerKind::File => recipe.tokenizer.path.clone(),
        // A GGUF teacher's vocabulary is rebuilt from the file, which the import checks.
        TokenizerKind::Teacher if recipe.teacher.kind == crate::recipe::TeacherKind::Gguf => None,
        TokenizerKind::Teacher => Some(teacher::teacher_tokenizer(recipe)),
    };
    let Some(path) = path.filter(|p| gguf && p.is_file()) else {
        return Ok(());
    };
    let j: serde_json::Value = crate::util::read_json(&path)?;
    crate::export::gguf_model::gguf_tokenizer(&j).map(|_| ()).map_err(|e| {
        Error::input(format!(
            "export.formats asks for GGUF, but {}: cannot write this tokenizer to GGUF: {e}",
            path.display()
        ))
    })
}

/// Write the resolved recipe into a new run directory, or check that an existing one holds
/// the same recipe.
fn claim_run_dir(recipe: &Recipe, dir: &Path) -> Result<()> {
    let resolved = RunDir(dir).resolved_recipe();
    let text = recipe.to_toml();
    if resolved.is_file() {
        let old = crate::error::read_to_string(&resolved)?;
        if old != text {
            return Err(Error::input(format!(
                "{} already holds a run with a different recipe: continue it with `distill resume {}`, or choose another run.name (--set run.name=...)",
                dir.display(),
                dir.display()
            )));
        }
    } else {
        std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
        crate::util::write_atomic(&resolved, text.as_bytes())?;
    }
    Ok(())
}

/// Continue the run in `dir` from its resolved recipe.
pub fn resume(dir: &Path, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    let recipe = load_run_recipe(dir)?;
    let _lock = RunLock::acquire(dir)?;
    recording_failure(dir, || execute(&recipe, dir, opts, log))
}

pub fn load_run_recipe(dir: &Path) -> Result<Recipe> {
    let p = RunDir(dir).resolved_recipe();
    if !p.is_file() {
        return Err(Error::input(format!(
            "{}: not a run directory (no {})",
            dir.display(),
            p.file_name().unwrap_or_default().to_string_lossy()
        )));
    }
    let mut recipe = Recipe::load(&p, &[])?;
    // The directory may have been moved since: it is where the run lives now.
    recipe.run.out_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    recipe.run.name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    Ok(recipe)
}

/// A finished run's live teacher (wherever it lives, checked against the run's data as the
/// run did) and its student, `load_final` giving a model the run trained itself.
pub fn teacher_and_student(
    r: &Recipe,
    run_dir: &Path,
    device: &Device,
    load_final: impl Fn(Phase) -> Result<Decoder>,
) -> Result<(Decoder, Decoder)> {
    let d = data::load_prepared(run_dir)?.pack(r.data.seq_len, r.data.packing);
    let teacher = Teacher::of(r, run_dir).obtain(&d, device, &mut |_| {}, |_| load_final(Phase::Teacher))?;
    let student = load_final(Phase::Student)?;
    if teacher.config.vocab_size != student.config.vocab_size {
        return Err(Error::input(format!(
            "{}: the teacher has a vocabulary of {}, the student {}",
            run_dir.display(),
            teacher.config.vocab_size,
            student.config.vocab_size
        )));
    }
    Ok((teacher, student))
}

/// The run's teacher cache, opened, when the recipe trains from one and the teacher's own files
/// are gone (what `eval` can then still measure); `None` when the teacher is there.
/// `d`: the run's data as it packed it.
pub fn cache_without_teacher(r: &Recipe, run_dir: &Path, d: &RunData) -> Result<Option<cache::CacheReader>> {
    if r.teacher.logits != crate::recipe::LogitsSource::Cache
        || Teacher::of(r, run_dir).files().is_ok_and(|f| f.iter().all(|p| p.is_file()))
    {
        return Ok(None);
    }
    match cached::offline(r, run_dir, d)? {
        Some(m) => Ok(Some(cached::open_offline(r, d, &m)?)),
        None => Ok(None),
    }
}

/// The run's student at checkpoint `which` (`latest` or `step-N`) rather than its final weights:
/// the newest checkpoint or the one of that step, into the student's shape (its finished or
/// first weights' config, else the recipe's over the teacher's vocabulary).
pub fn student_checkpoint(r: &Recipe, run_dir: &Path, which: &str, vocab: usize, device: &Device) -> Result<Decoder> {
    let dir = RunDir(run_dir).checkpoints(Phase::Student);
    let ck = match which {
        "latest" => crate::train::checkpoint::list(&dir).pop(),
        step => {
            let n: u64 = step
                .strip_prefix("step-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::input(format!("--checkpoint: expected `latest` or `step-N`, got `{step}`")))?;
            crate::train::checkpoint::list(&dir).into_iter().find(|p| crate::train::checkpoint::step_of(p) == Some(n))
        }
    }
    .ok_or_else(|| Error::input(format!("{}: no checkpoint `{which}` here", dir.display())))?;
    let fin = RunDir(run_dir).final_model(Phase::Student);
    let first = init::init_dir(run_dir);
    let cfg = match (fin.join("model.json").is_file(), first.join("model.json").is_file()) {
        (true, _) => store::read_config(&fin)?,
        (false, true) => store::read_config(&first)?,
        _ => DecoderConfig { vocab_size: vocab, shape: r.student.shape() },
    };
    crate::train::checkpoint::load_model(&ck, cfg.init(0, device))
}

/// `f` on the data job of `recipe` in `dir`. The teacher sits above the data, so the pipeline
/// says where the teacher's tokenizer.json is and how the teacher scores documents.
fn with_data_job<T>(recipe: &Recipe, dir: &Path, f: impl FnOnce(&data::DataJob) -> Result<T>) -> Result<T> {
    let doc_ppl = |docs: &[Vec<u32>], eos: u32| -> Result<Vec<f64>> {
        let device = device_for(recipe.run.backend);
        let teacher = Teacher::of(recipe, dir).load_before_data(&device)?;
        Ok(crate::teacher::doc_ppl(&teacher, docs, eos, &device))
    };
    let teacher_tokenizer = (recipe.tokenizer.kind == TokenizerKind::Teacher)
        .then(|| teacher::teacher_tokenizer_in(recipe, dir))
        .transpose()?;
    let chat = chat::chat_job(recipe, teacher_tokenizer.as_deref())?;
    let job = data::DataJob {
        data: &recipe.data,
        tokenizer: &recipe.tokenizer,
        seed: recipe.run.seed,
        teacher_tokenizer,
        doc_ppl: Some(&doc_ppl),
        chat,
    };
    f(&job)
}

/// Prepare the run's data into `dir`, or load it if an earlier run finished this stage.
pub fn prepare_data(recipe: &Recipe, dir: &Path, log: &mut dyn FnMut(String)) -> Result<data::Prepared> {
    with_data_job(recipe, dir, |job| data::prepare(job, dir, log))
}

/// `distill data`: prepare the data files without loading the token streams afterwards.
pub fn prepare_data_to_disk(recipe: &Recipe, dir: &Path, log: &mut dyn FnMut(String)) -> Result<()> {
    with_data_job(recipe, dir, |job| data::prepare_to_disk(job, dir, log))
}

fn prepare_run_data(recipe: &Recipe, dir: &Path, log: &mut dyn FnMut(String)) -> Result<RunData> {
    Ok(prepare_data(recipe, dir, log)?.pack(recipe.data.seq_len, recipe.data.packing))
}

/// Load the frozen teacher, or pretrain it (resuming) when the recipe says so.
fn obtain_teacher(
    recipe: &Recipe,
    dir: &Path,
    d: &RunData,
    device: &Device,
    opts: &RunOptions,
    log: &mut dyn FnMut(String),
) -> Result<Decoder> {
    Teacher::of(recipe, dir).obtain(d, device, log, |log| {
        stage(
            dir,
            Phase::Teacher,
            &d.tok_hash,
            device,
            log,
            |stop_after| {
                let teacher_cfg = DecoderConfig { vocab_size: d.vocab, shape: recipe.teacher.shape() };
                let job = TrainJob {
                    phase: Phase::Teacher,
                    dir: RunDir(dir).phase(Phase::Teacher),
                    metrics: RunDir(dir).metrics(),
                    model: teacher_cfg.clone(),
                    precision: recipe.run.precision,
                    optim: &recipe.teacher.optim,
                    teacher: TeacherSource::None,
                    kd: KdConfig {
                        alpha: 1.0,
                        temperature: 1.0,
                        chunk_tokens: recipe.distill.chunk_tokens_for(d.vocab),
                        divergence: crate::kd_loss::Divergence::ForwardKl,
                    },
                    alpha_end: None,
                    temperature_end: None,
                    curriculum: None,
                    train: &d.train,
                    valid: &d.valid,
                    seed: recipe.run.seed,
                    checkpoint: &recipe.checkpoint,
                    eval: &recipe.eval,
                    stop: opts.stop,
                    stop_after,
                    on_nan: recipe.run.on_nan,
                    nan_retries: recipe.run.nan_retries,
                    fault_nan_at: None,
                    quiet: opts.quiet,
                    qat: None,
                    init: None,
                    freeze: Default::default(),
                    hidden: None,
                    on_policy: None,
                    recompute: recipe.run.recompute_every(),
                    checkpoints: true,
                };
                train(&job, device)
            },
            opts,
        )
    })
}

/// `distill prune`: prepare the data and the teacher, then cut and keep the student (its
/// importance table beside it), without training.
pub fn prune(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Decoder> {
    if recipe.student.init != crate::import::StudentInit::Prune {
        return Err(Error::input(
            "distill prune: the recipe's student.init must be \"prune\" (add --set student.init=prune)",
        ));
    }
    let dir = recipe.run_dir();
    let _lock = RunLock::acquire(&dir)?;
    claim_run_dir(recipe, &dir)?;
    let device = device_for(recipe.run.backend);
    let d = prepare_run_data(recipe, &dir, log)?;
    check_stop(opts, "data preparation")?;
    let teacher = obtain_teacher(recipe, &dir, &d, &device, opts, log)?;
    Ok(init::student_init(recipe, &dir, &d, Some(&teacher), &device, log)?.expect("a pruned student"))
}

/// `distill cache-teacher`: prepare the data and the teacher of a recipe and write its cache.
pub fn cache_teacher(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<cache::Manifest> {
    let dir = recipe.run_dir();
    let _lock = RunLock::acquire(&dir)?;
    claim_run_dir(recipe, &dir)?;
    let device = device_for(recipe.run.backend);
    let d = prepare_run_data(recipe, &dir, log)?;
    if let Some(m) = cached::offline(recipe, &dir, &d)? {
        return Ok(cached::open_offline(recipe, &d, &m)?.manifest);
    }
    let teacher = obtain_teacher(recipe, &dir, &d, &device, opts, log)?;
    Ok(cached::open_or_build(recipe, &dir, &teacher, &d, &device, opts.quiet, opts.stop, log)?.manifest)
}

/// What `distill bench-train` measured: the metrics rows of the student's steps and the sizes
/// that turn tokens/s into FLOP/s.
pub struct TrainRun {
    pub rows: Vec<metrics::MetricsRow>,
    pub student: DecoderConfig,
    /// `None` when the targets come from the cache (no teacher forward in the step).
    pub online_teacher: Option<DecoderConfig>,
    pub seq_len: usize,
}

/// `distill bench-train`: the run's own student training loop, from a fresh student, for
/// `recipe.optim.steps` steps. Data, teacher and cache are prepared (or reused) first as in a
/// run; the final evaluation and exports are skipped.
pub fn bench_train(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<TrainRun> {
    let dir = recipe.run_dir();
    // (After the claim, which may clear a bench directory of other inputs, lock and all.)
    claim_bench_dir(recipe, &dir)?;
    let _lock = RunLock::acquire(&dir)?;
    // A fresh student each time: no checkpoint to resume, no metrics of an earlier bench.
    let student_dir = RunDir(&dir).phase(Phase::Student);
    if student_dir.exists() {
        std::fs::remove_dir_all(&student_dir).map_err(|e| Error::runtime(format!("{}: {e}", student_dir.display())))?;
    }
    let metrics_path = RunDir(&dir).metrics();
    if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| Error::runtime(format!("{}: {e}", metrics_path.display())))?;
    }
    let setup = StudentSetup::load(recipe, &dir, opts, log)?;
    let curriculum = setup.curriculum(recipe, &dir, log)?;
    log(format!("training the student for {} steps on {:?}", recipe.optim.steps, recipe.run.backend));
    let job = TrainJob { checkpoints: false, ..setup.job(recipe, &dir, curriculum, opts, None) };
    train(&job, &setup.device)?;
    let rows = metrics::read(&metrics_path).into_iter().filter(|r| r.phase == "student").collect();
    let online_teacher = match setup.source() {
        TeacherSource::Online(t) => Some(t.config.clone()),
        _ => None,
    };
    Ok(TrainRun { rows, student: setup.student_cfg.clone(), online_teacher, seq_len: recipe.data.seq_len })
}

/// A benchmark's run directory is scratch. It is reused when the recipe's inputs (data,
/// tokenizer, teacher, cache, seed) are those it was made with, so that the prepared data and
/// a teacher cache carry over between benchmarks of other settings; otherwise it starts afresh.
fn claim_bench_dir(recipe: &Recipe, dir: &Path) -> Result<()> {
    if RunDir(dir).resolved_recipe().is_file() {
        let same_inputs = load_run_recipe(dir).is_ok_and(|old| {
            (&old.data, &old.tokenizer, &old.teacher, &old.cache, old.run.seed)
                == (&recipe.data, &recipe.tokenizer, &recipe.teacher, &recipe.cache, recipe.run.seed)
        });
        if same_inputs {
            crate::util::write_atomic(&RunDir(dir).resolved_recipe(), recipe.to_toml().as_bytes())?;
        } else {
            std::fs::remove_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
        }
    }
    claim_run_dir(recipe, dir)
}

fn execute(recipe: &Recipe, dir: &Path, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Summary> {
    let wall = Instant::now();
    let setup = StudentSetup::load(recipe, dir, opts, log)?;
    check_stop(opts, "the teacher")?;
    let curriculum = setup.curriculum(recipe, dir, log)?;
    let (device, d, metrics_path) = (&setup.device, &setup.d, RunDir(dir).metrics());
    let student = stage(
        dir,
        Phase::Student,
        &d.tok_hash,
        device,
        log,
        |stop_after| train(&setup.job(recipe, dir, curriculum, opts, stop_after), device),
        opts,
    )?;
    crate::report::plots::loss_svg(&metrics_path, &RunDir(dir).loss_plot())?;
    let valid_data = &d.valid;

    log("evaluating on the held-out split".into());
    // The teacher's held-out loss was evaluated when its cache was built (on these tokens).
    let (offline, reader, teacher) = (&setup.offline, &setup.reader, &setup.teacher);
    let cached = offline
        .as_ref()
        .or(reader.as_ref().map(|r| &r.manifest))
        .and_then(|m| cached::cached_held_out(m, valid_data, recipe.data.seq_len));
    let bs = recipe.optim.batch_size;
    let eval_or_stop = |m: &Decoder, what: &str| evaluate_or_stop(m, valid_data, bs, device, opts.stop, what);
    let te = match (cached, &teacher) {
        (Some(e), _) => e,
        (None, Some(t)) => eval_or_stop(t, "the teacher's evaluation")?,
        (None, None) => unreachable!("an offline cache holds the held-out loss"),
    };
    let se = eval_or_stop(&student, "the student's evaluation")?;
    let q8 = eval_or_stop(&fake_quant_model(&student), "the int8 student's evaluation")?;
    let mut exports = Vec::new();
    for f in &recipe.export.formats {
        check_stop(opts, "evaluation")?;
        let (p, size) =
            crate::export::export(&student, *f, &recipe.qat.plan(), &RunDir(dir).export(), &RunDir(dir).tokenizer())?;
        exports.push((p.display().to_string(), size));
    }
    let rows = metrics::read(&metrics_path);
    let tok_s = |phase: &str| {
        let last = rows.iter().rev().find(|v| v.phase == phase);
        last.map_or(0.0, |v| v.tokens as f64 / v.elapsed_s)
    };
    let summary = Summary {
        teacher: te,
        student: se,
        student_int8: q8,
        teacher_params: setup.teacher_params,
        student_params: student.config.matmul_params(),
        teacher_tok_per_s: tok_s("teacher"),
        student_tok_per_s: tok_s("student"),
        wall_s: wall.elapsed().as_secs_f64(),
        exports,
    };
    crate::util::write_json_atomic(&RunDir(dir).summary(), &summary)?;
    log(summary_table(&summary, valid_data));
    Ok(summary)
}

/// A stop (SIGINT/SIGTERM) between stages: every finished stage is on disk and is skipped by
/// `resume`, so stopping here loses nothing.
pub(crate) fn check_stop(opts: &RunOptions, after: &str) -> Result<()> {
    match opts.stop.load(std::sync::atomic::Ordering::SeqCst) {
        true => Err(Error::Interrupted(format!("stopped after {after} (everything finished is saved)"))),
        false => Ok(()),
    }
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
    let fin: PathBuf = RunDir(dir).final_model(phase);
    if RunDir(dir).is_trained(phase) {
        log(format!("{}: already trained, loading {}", phase.name(), fin.display()));
        return Ok(store::load(&fin, device)?.0);
    }
    let stop_after = opts.stop_after.and_then(|(p, n)| (p == phase).then_some(n));
    let model = train_fn(stop_after)?;
    // The tokenizer travels with the weights, so a final directory is a usable teacher alone.
    std::fs::create_dir_all(&fin).map_err(|e| Error::runtime(format!("{}: {e}", fin.display())))?;
    crate::util::copy_atomic(&RunDir(dir).tokenizer(), &fin.join("tokenizer.json"))?;
    store::save(&fin, &model, tok_hash)?;
    Ok(model)
}

pub fn summary_table(s: &Summary, valid: &Packed) -> String {
    let mb = |n: u64| n as f64 / 1e6;
    let mut t = format!("held-out split: {} tokens\n", valid.n_tokens());
    // Training throughput; a loaded teacher was not trained in this run.
    let rate = |r: f64| if r > 0.0 { format!("{r:.0}") } else { "-".into() };
    t += &format!("{:<16} {:>12} {:>10} {:>12} {:>12}\n", "model", "params", "loss", "perplexity", "train tok/s");
    t += &format!(
        "{:<16} {:>12} {:>10.4} {:>12.3} {:>12}\n",
        "teacher",
        s.teacher_params,
        s.teacher.loss,
        s.teacher.ppl,
        rate(s.teacher_tok_per_s)
    );
    t += &format!(
        "{:<16} {:>12} {:>10.4} {:>12.3} {:>12}\n",
        "student f32",
        s.student_params,
        s.student.loss,
        s.student.ppl,
        rate(s.student_tok_per_s)
    );
    t += &format!(
        "{:<16} {:>12} {:>10.4} {:>12.3}\n",
        "student int8", s.student_params, s.student_int8.loss, s.student_int8.ppl
    );
    for (p, size) in &s.exports {
        t += &format!("export: {p} ({:.2} MB)\n", mb(*size));
    }
    t += &format!("wall time: {:.1} s", s.wall_s);
    t
}
