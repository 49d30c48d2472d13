//! What the student's training needs, loaded once: the data, the teacher (or its offline
//! cache), the curriculum and the training job. Shared by a run ([`super::execute`]) and the
//! training benchmark ([`super::bench_train`]), so the benchmark times exactly the run's loop.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;

use super::teacher::Teacher;
use super::{RunOptions, cached, obtain_teacher, prepare_run_data};
use crate::curriculum::TeacherScores;
use crate::data::RunData;
use crate::error::Error;
use crate::error::Result;
use crate::kd_loss::KdConfig;
use crate::model::{Decoder, DecoderConfig};
use crate::recipe::{LogitsSource, Recipe, RowOrder, Schedule};
use crate::run_dir::RunDir;
use crate::teacher::TeacherSource;
use crate::teacher::cache::{self, CacheReader};
use crate::teacher::codec::TailMode;
use crate::train::freeze::Freeze;
use crate::train::hidden::HiddenJob;
use crate::train::trainer::OnPolicyJob;
use crate::train::{CurriculumRun, Phase, TrainJob};

pub(super) struct StudentSetup {
    pub device: Device,
    pub d: RunData,
    /// The cache's manifest when the teacher is offline (neither loaded nor hashed).
    pub offline: Option<cache::Manifest>,
    pub teacher: Option<Decoder>,
    pub reader: Option<Arc<CacheReader>>,
    pub student_cfg: DecoderConfig,
    /// The first weights of a loaded or pruned student (`None`: random).
    pub init: Option<Decoder>,
    /// The hidden-state loss, resolved against both models' depths and widths.
    pub hidden: Option<HiddenJob>,
    /// The ids that end an on-policy completion (empty without `[distill.on_policy]`).
    pub stops: Vec<u32>,
    pub teacher_params: usize,
    /// The student finished training in an earlier session: no targets are needed.
    pub student_done: bool,
    tail: TailMode,
}

impl StudentSetup {
    /// Prepare (or load) the data, then the teacher or its cache.
    pub fn load(recipe: &Recipe, dir: &Path, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<Self> {
        let device = super::device_for(recipe.run.backend);
        let d = prepare_run_data(recipe, dir, log)?;
        super::check_stop(opts, "data preparation")?;
        let student_done = RunDir(dir).is_trained(Phase::Student);
        // A cached teacher is offline: with a matching cache it is neither loaded nor hashed.
        let offline = cached::offline(recipe, dir, &d)?;
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
        let reader = match (recipe.teacher.logits, &teacher, &offline) {
            (LogitsSource::Cache, _, _) if student_done => None,
            (LogitsSource::Cache, Some(t), _) => {
                Some(Arc::new(cached::open_or_build(recipe, dir, t, &d, &device, opts.quiet, opts.stop, log)?))
            }
            (LogitsSource::Cache, None, Some(m)) => Some(Arc::new(cached::open_offline(recipe, &d, m)?)),
            _ => None,
        };
        let init = match student_done {
            true => None,
            false => super::init::student_init(recipe, dir, &d, teacher.as_ref(), &device, log)?,
        };
        let student_cfg = match &init {
            Some(m) => m.config.clone(),
            None => DecoderConfig { vocab_size: vocab, shape: recipe.student.shape() },
        };
        let hidden = match &teacher {
            Some(t) if !crate::recipe::hidden_off(&recipe.distill.hidden) => Some(hidden_job(recipe, &student_cfg, t)?),
            _ => None,
        };
        let tail = recipe.cache.tail;
        let stops = match crate::on_policy::off(&recipe.distill.on_policy) {
            true => Vec::new(),
            false => super::chat::stop_ids(recipe, dir)?,
        };
        Ok(StudentSetup {
            hidden,
            stops,
            device,
            d,
            offline,
            teacher,
            reader,
            student_cfg,
            init,
            teacher_params,
            student_done,
            tail,
        })
    }

    /// Where the distillation targets come from.
    pub fn source(&self) -> TeacherSource<'_> {
        match (&self.reader, &self.teacher) {
            (Some(r), _) => TeacherSource::Cache { reader: r.clone(), tail: self.tail },
            (None, Some(t)) if !self.student_done => TeacherSource::Online(t),
            _ => TeacherSource::None,
        }
    }

    /// The recipe's curriculum over the training rows (scores computed or loaded), or `None`
    /// when the student is done or the recipe has none.
    pub fn curriculum(
        &self,
        recipe: &Recipe,
        dir: &Path,
        log: &mut dyn FnMut(String),
    ) -> Result<Option<CurriculumRun>> {
        let c = &recipe.curriculum;
        if self.student_done || (c.schedule == Schedule::None && c.order == RowOrder::Random) {
            return Ok(None);
        }
        if c.schedule == Schedule::SelfPaced {
            return Ok(Some(CurriculumRun { cfg: c.clone(), pct: None, first_epoch: None }));
        }
        // The cache carries the teacher's identity; hashing the teacher's files again (gigabytes
        // for a real model) is only needed for an online teacher's scores.
        let from = match &self.reader {
            Some(reader) => TeacherScores::Cache(reader),
            None => TeacherScores::Online {
                teacher: self.teacher.as_ref().expect("an online teacher is loaded"),
                hash: if c.score.needs_teacher() { Teacher::of(recipe, dir).hash()? } else { String::new() },
                batch: recipe.optim.batch_size,
                device: &self.device,
            },
        };
        let scores = crate::curriculum::scores(dir, c.score, &self.d.train, &from)?;
        let pct = crate::curriculum::percentiles(&scores);
        let first_epoch = (c.order == RowOrder::EasyToHard).then(|| {
            let mut order: Vec<usize> = (0..pct.len()).collect();
            order.sort_by(|&a, &b| pct[a].total_cmp(&pct[b]));
            order
        });
        log(format!(
            "curriculum: {:?} schedule on {:?} scores of {} rows ({} order)",
            c.schedule,
            c.score,
            pct.len(),
            if first_epoch.is_some() { "easy-to-hard" } else { "random" }
        ));
        Ok(Some(CurriculumRun { cfg: c.clone(), pct: Some(pct), first_epoch }))
    }

    /// The student's training job as the recipe describes it.
    pub fn job<'a>(
        &'a self,
        recipe: &'a Recipe,
        dir: &Path,
        curriculum: Option<CurriculumRun>,
        opts: &'a RunOptions,
        stop_after: Option<usize>,
    ) -> TrainJob<'a> {
        TrainJob {
            phase: Phase::Student,
            dir: RunDir(dir).phase(Phase::Student),
            metrics: RunDir(dir).metrics(),
            model: self.student_cfg.clone(),
            precision: recipe.run.precision,
            optim: &recipe.optim,
            teacher: self.source(),
            kd: KdConfig {
                alpha: recipe.distill.alpha,
                temperature: recipe.distill.temperature,
                chunk_tokens: recipe.distill.chunk_tokens_for(self.student_cfg.vocab_size),
                divergence: recipe.distill.divergence(),
            },
            alpha_end: recipe.distill.alpha_end,
            temperature_end: recipe.distill.temperature_end,
            curriculum,
            train: &self.d.train,
            valid: &self.d.valid,
            seed: recipe.run.seed,
            checkpoint: &recipe.checkpoint,
            eval: &recipe.eval,
            stop: opts.stop,
            stop_after,
            on_nan: recipe.run.on_nan,
            nan_retries: recipe.run.nan_retries,
            fault_nan_at: None,
            quiet: opts.quiet,
            qat: recipe.qat.enabled.then_some((recipe.qat.plan(), recipe.qat.start_step)),
            init: self.init.as_ref(),
            freeze: Freeze::parse(&recipe.student.freeze).expect("validated"),
            hidden: self.hidden.clone(),
            on_policy: (!crate::on_policy::off(&recipe.distill.on_policy))
                .then(|| OnPolicyJob { cfg: recipe.distill.on_policy.clone(), stops: self.stops.clone() }),
            recompute: recipe.run.recompute_every(),
            checkpoints: true,
        }
    }
}

/// `[distill.hidden]` against the student and the loaded teacher: the layer pairs checked
/// against both depths.
fn hidden_job(recipe: &Recipe, student: &DecoderConfig, teacher: &Decoder) -> Result<HiddenJob> {
    let h = &recipe.distill.hidden;
    let (s, t) = (student.shape.n_layers, teacher.config.shape.n_layers);
    let pairs = crate::kd_loss::hidden::resolve_pairs(&h.pairs, s, t)
        .map_err(|e| Error::input(format!("key `distill.hidden.pairs`: {e}")))?;
    Ok(HiddenJob { weight: h.weight, loss: h.loss, pairs, d_teacher: teacher.config.shape.d_model })
}
