//! The training loop. Reads top to bottom: restore or initialize, then per step: draw rows at
//! the data cursor, forward student (and teacher), loss, backward, accumulate, clip, AdamW,
//! log, evaluate, checkpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use super::adamw::{AdamW, StepArgs};
use super::checkpoint::{self, TrainState};
use super::config::{CheckpointSection, EvalSection, OnNan, OptimSection, Precision};
use super::metrics::{MetricsLog, MetricsRow};
use super::read_ahead::ReadAhead;
use super::recompute::Recompute;
use super::schedule::lr_at;
use crate::curriculum;
use crate::curriculum::{CurriculumSection, Schedule};
use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::eval::evaluate;
use crate::kd_loss::{KdConfig, Target, kd_loss_fused_head, kd_loss_streamed};
use crate::model::{Decoder, DecoderConfig};
use crate::profile::PhaseTimer;
use crate::quant::fake_quant::{Plan, qat_view};
pub use crate::run_dir::Phase;

use crate::teacher::{TeacherSource, row_nll};

/// A curriculum as the trainer uses it.
pub struct CurriculumRun {
    pub cfg: CurriculumSection,
    /// Difficulty percentile of each training row (absent for self_paced).
    pub pct: Option<Vec<f32>>,
    /// The first epoch's row order (easy_to_hard), else a random permutation per epoch.
    pub first_epoch: Option<Vec<usize>>,
}

/// What the student's forward pass hands the loss: its logits, or its last hidden states and
/// LM head for the loss to fuse. (Tensor handles, a few words each: nothing to box.)
#[allow(clippy::large_enum_variant)]
enum Student {
    Logits(Tensor<2>),
    Hidden(Tensor<2>, Tensor<2>),
}

pub struct TrainJob<'a> {
    pub phase: Phase,
    /// `<run>/teacher` or `<run>/student`: holds `checkpoints/`.
    pub dir: PathBuf,
    pub metrics: PathBuf,
    pub model: DecoderConfig,
    pub precision: Precision,
    pub optim: &'a OptimSection,
    /// Where the distillation targets come from, and the loss settings.
    pub teacher: TeacherSource<'a>,
    pub kd: KdConfig,
    /// Linear schedules of alpha and tau from `kd`'s values to these by the last step.
    pub alpha_end: Option<f64>,
    pub temperature_end: Option<f64>,
    pub curriculum: Option<CurriculumRun>,
    pub train: &'a Packed,
    pub valid: &'a Packed,
    pub seed: u64,
    pub checkpoint: &'a CheckpointSection,
    pub eval: &'a EvalSection,
    /// Set by Ctrl-C: finish the step, checkpoint, return `Error::Interrupted`.
    pub stop: &'a AtomicBool,
    /// Stop (as if interrupted) after this many steps: used by tests to simulate a crash.
    pub stop_after: Option<usize>,
    /// No progress bar; evaluation lines are still printed.
    pub quiet: bool,
    /// `run.on_nan` and its budget (`run.nan_retries`).
    pub on_nan: OnNan,
    pub nan_retries: u32,
    /// Fault injection for tests: the loss reads as NaN the first time this step is reached.
    pub fault_nan_at: Option<usize>,
    /// Quantization-aware training: from step `.1` on, the forward runs through the weights
    /// as ggml's format `.0` stores them (`quant::fake_quant::qat_view`).
    pub qat: Option<(Plan, usize)>,
    /// The first weights (a loaded or pruned student), instead of a seeded random init of
    /// `model`; on any device (moved to the training one).
    pub init: Option<&'a Decoder>,
    /// Parameter groups that keep their first values.
    pub freeze: super::freeze::Freeze,
    /// A hidden-state loss against the online teacher's block outputs.
    pub hidden: Option<super::hidden::HiddenJob>,
    /// On-policy distillation: the share of micro-batches the student writes.
    pub on_policy: Option<OnPolicyJob>,
    /// Activation checkpointing: one block in this many is recomputed in the backward.
    pub recompute: Option<usize>,
    /// Whether checkpoints are written (not by benchmarks: at a 1B student the last step's
    /// checkpoint is 15 GB of writing that nothing reads).
    pub checkpoints: bool,
}

/// `[distill.on_policy]` and the ids that end a completion (EOS, a template's end of turn).
pub struct OnPolicyJob {
    pub cfg: crate::on_policy::OnPolicySection,
    pub stops: Vec<u32>,
}

/// Train to `optim.steps` (continuing from the latest checkpoint if there is one) and return
/// the trained model on the plain device.
pub fn train(job: &TrainJob, device: &Device) -> Result<Decoder> {
    let ad = device.clone().autodiff();
    let o = job.optim;
    let ck_dir = job.dir.join("checkpoints");
    std::fs::create_dir_all(&ck_dir).map_err(|e| Error::runtime(format!("{}: {e}", ck_dir.display())))?;
    // The start of training, or where the newest good checkpoint left it (also what a
    // rollback returns to): the initial model is a function of the seed, made when needed.
    let newest = || -> Result<(Decoder, AdamW, TrainState)> {
        let model = match job.init {
            Some(m) => crate::model::number_params(m.clone(), job.seed ^ phase_salt(job.phase)),
            None => job.model.init(job.seed ^ phase_salt(job.phase), &ad),
        };
        let model = match &job.hidden {
            Some(h) => h.attach(model, job.seed ^ phase_salt(job.phase), &ad),
            None => model,
        };
        let model = super::freeze::trainable(model, &job.freeze, &ad);
        Ok(match checkpoint::load_newest_good(&ck_dir, &model, o, &ad)? {
            Some(loaded) => loaded,
            None => (model, AdamW::new(o), TrainState::start()),
        })
    };
    let (mut model, mut optim, mut st) = newest()?;
    let mut fault = job.fault_nan_at;
    let mut log = MetricsLog::open(&job.metrics, job.phase.name(), st.step)?;
    let pb = progress(job, st.step);
    let started = Instant::now();
    let elapsed_before = st.elapsed_s;
    let phase = job.phase.name();
    let mut read_ahead = ReadAhead { pending: None };
    let mut prof = PhaseTimer::from_env(device);
    while st.step < o.steps {
        let t0 = Instant::now();
        // Two steps of warm-up (kernel selection, allocator growth) are not profiled.
        if st.step == 2.min(o.steps - 1) {
            prof.reset();
        }
        prof.start_step();
        let lr = lr_at(o, st.step) * st.lr_scale;
        let progress = st.step as f64 / o.steps as f64;
        let mut kd = job.kd;
        if let Some(a) = job.alpha_end {
            kd.alpha += (a - job.kd.alpha) * progress;
        }
        if let Some(tau) = job.temperature_end {
            kd.temperature += (tau - job.kd.temperature) * progress;
        }
        let first_epoch = job.curriculum.as_ref().and_then(|c| c.first_epoch.as_deref());
        // alpha = 1 is the hard-label loss alone: an online teacher's logits would go unused,
        // so it does not run (a cache's targets cost only a read and keep the KL logged).
        let targets = match &job.teacher {
            TeacherSource::None => false,
            TeacherSource::Online(_) => kd.alpha < 1.0,
            TeacherSource::Cache { .. } => true,
        };
        model = crate::model::approx_attention::redraw(model, job.seed, st.step);
        let mut acc = GradientsAccumulator::<Decoder>::new();
        // The step's loss is the weighted mean over the real tokens of all its micro-batches:
        // each micro-batch contributes its weighted sum (its mean times its weight W_m), and
        // the accumulated gradient is divided by W = sum_m W_m at the end. Averaging the
        // micro-batch means instead over-weights the tokens of sparsely filled micro-batches.
        // The sums stay on the device, [loss, ce, kl] * W_m and W_m, and are read once per step
        // with the gradient norm: every read-back would stall a GPU's queue.
        let mut sums: Option<Tensor<1>> = None;
        let (mut step_tokens, mut loss_tokens) = (0usize, 0usize);
        let mut wsum = [0.0f64; 4];
        let mut loads: Vec<Vec<f64>> = Vec::new();
        let (mut on_policy_batches, mut rollout_s) = (0usize, 0.0f64);
        let step_kd = kd;
        for micro in 0..o.grad_accum {
            let rows = job.train.rows_at_ordered(job.seed, st.cursor, o.batch_size, first_epoch);
            st.cursor += o.batch_size as u64;
            // On-policy: the student writes this batch's completions (no graph), graded by the
            // divergence alone.
            let (batch, kd, targets) = match &job.on_policy {
                Some(op) if op.cfg.takes(job.seed, st.step, micro) => {
                    let clock = Instant::now();
                    // The policy being trained writes: in bf16, and through QAT's rounding once on.
                    let writer = prepare(job, &model.valid(), st.step)?;
                    let at = (job.seed, st.step, micro);
                    let r = crate::on_policy::rollout(&op.cfg, &writer, job.train, &rows, &op.stops, at, device, &ad);
                    (on_policy_batches, rollout_s) = (on_policy_batches + 1, rollout_s + clock.elapsed().as_secs_f64());
                    let kd = KdConfig { alpha: 0.0, divergence: op.cfg.divergence(), ..step_kd };
                    (r.batch, kd, true)
                }
                _ => (job.train.batch(&rows, &ad), step_kd, targets),
            };
            prof.mark("data");
            let [b, t] = batch.inputs.dims();
            let v = job.model.vocab_size;
            // The teacher's final hidden states give its logits; its block outputs, the
            // hidden-state loss's targets (one pass, no graph).
            let (target, teacher_layers) = match &job.teacher {
                TeacherSource::Online(tm) if targets || job.hidden.is_some() => {
                    let layers = job.hidden.as_ref().map(|h| h.teacher_layers()).unwrap_or_default();
                    let (h, layers) =
                        tm.forward_with_layers(batch.inputs.clone().inner(), &layers, batch.docs.as_ref());
                    // The teacher's head runs inside the loss chunks (see Target::Hidden).
                    let d = h.dims()[2];
                    let target =
                        targets.then(|| Target::Hidden { hidden: h.reshape([b * t, d]), head: tm.head_weight() });
                    (target, Some(layers))
                }
                TeacherSource::None | TeacherSource::Online(_) => (None, None),
                TeacherSource::Cache { reader, tail } => {
                    let next = job.train.rows_at_ordered(job.seed, st.cursor, o.batch_size, first_epoch);
                    let host = read_ahead.take(reader, job.train, &rows, next, kd.temperature, *tail)?;
                    (Some(Target::TopK(host.to_device(&ad))), None)
                }
            };
            prof.mark("teacher");
            // Mixed precision: the forward and backward run through a bf16 copy of the weights
            // (the cast's backward returns f32 gradients to the master weights).
            let fwd = prepare(job, &model, st.step)?;
            // The loss fuses the LM head into its chunks, unless self-paced learning needs the
            // logits of every row.
            let self_paced = job.curriculum.as_ref().is_some_and(|c| c.cfg.schedule == Schedule::SelfPaced);
            let layers = job.hidden.as_ref().map(|h| h.student_layers()).unwrap_or_default();
            // (The recipe refuses activation checkpointing for MoE students: no routing there.)
            let (h, student_layers, recompute, routing) = match job.recompute {
                Some(every) => {
                    let (h, taken, r) = Recompute::forward(&fwd, batch.inputs, batch.docs.as_ref(), every, &layers);
                    (h, taken, Some(r), Vec::new())
                }
                None => {
                    let (h, layers, routing) = fwd.forward_routed(batch.inputs, &layers, batch.docs.as_ref());
                    (h, layers, None, routing)
                }
            };
            let aux = crate::model::moe::aux_loss(&routing, o.grad_accum, &mut loads);
            let student = match self_paced {
                true => Student::Logits(fwd.logits_of(h).reshape([b * t, v])),
                false => Student::Hidden(h.reshape([b * t, job.model.shape.d_model]), fwd.head_weight()),
            };
            prof.mark("student forward");
            // Curriculum weights ride on the loss mask: sum_i w_i L_i / sum_i w_i over tokens.
            let mask = match &job.curriculum {
                Some(c) if c.cfg.schedule != Schedule::None => {
                    // Self-paced learning ranks rows by the student's current loss (no graph).
                    let losses = match &student {
                        Student::Logits(logits) => {
                            Some(row_nll(logits.clone(), batch.targets.clone(), batch.mask.clone(), b, t))
                        }
                        Student::Hidden(..) => None,
                    };
                    let w = curriculum::weights(&c.cfg, &rows, progress, c.pct.as_deref(), losses.as_deref());
                    let hard: Vec<bool> = match (&c.pct, &losses) {
                        (Some(p), _) => rows.iter().map(|&r| p[r] > 0.5).collect(),
                        (None, Some(l)) => {
                            let mut sorted = l.clone();
                            sorted.sort_by(f64::total_cmp);
                            let median = sorted[sorted.len() / 2];
                            l.iter().map(|x| *x > median).collect()
                        }
                        _ => vec![false; rows.len()],
                    };
                    let (mean, min, max, share) = curriculum::weight_stats(&w, &hard);
                    for (acc, x) in wsum.iter_mut().zip([mean, min, max, share]) {
                        *acc += x / o.grad_accum as f64;
                    }
                    let wt: Vec<f32> = w.iter().flat_map(|&x| std::iter::repeat_n(x as f32, t)).collect();
                    batch.mask * Tensor::<1>::from_data(TensorData::new(wt, [b * t]), &ad)
                }
                _ => batch.mask,
            };
            let w_m = mask.clone().inner().sum();
            let hidden = match (&job.hidden, &teacher_layers) {
                (Some(hj), Some(tl)) => Some((hj.weight, hj.loss(&fwd, &student_layers, tl, mask.clone()))),
                _ => None,
            };
            let out = match student {
                Student::Logits(logits) => kd_loss_streamed(logits, target, batch.targets, mask, kd),
                Student::Hidden(h, w) => kd_loss_fused_head(h, w, target, batch.targets, mask, kd),
            };
            prof.mark("loss (+ its bwd)");
            let w = || w_m.clone();
            let total = match &hidden {
                Some((weight, hl)) => out.total + hl.clone() * *weight,
                None => out.total,
            };
            let coef = job.model.shape.moe.as_ref().map_or(0.0, |m| m.router_aux_loss);
            let total = match &aux {
                Some(a) => total + a.clone().mul_scalar(coef),
                None => total,
            };
            let mut row = vec![total.clone().inner() * w(), out.ce.inner() * w(), out.kl.inner() * w(), w()];
            row.extend(hidden.map(|(_, hl)| hl.inner() * w()));
            row.extend(aux.map(|a| a.inner() * w()));
            crate::util::accumulate(&mut sums, Tensor::cat(row, 0));
            step_tokens += batch.input_tokens;
            loss_tokens += batch.real_tokens;
            let grads = (total * Tensor::from_inner(w_m)).backward();
            if let Some(r) = recompute {
                // A tied embedding's graph node went with the head's backward: block 0's
                // recomputation reads the embedding through a graph of its own.
                let embed = match model.lm_head {
                    None => {
                        prepare(job, &Decoder { blocks: Vec::new(), hidden_proj: None, ..model.clone() }, st.step)?
                            .embed
                    }
                    Some(_) => fwd.embed.clone(),
                };
                r.backward(&grads, &embed, |g| acc.accumulate(&model, GradientsParams::from_grads(g, &model)));
            }
            acc.accumulate(&model, GradientsParams::from_grads(grads, &model));
            prof.mark("student backward");
        }
        let grads = acc.grads();
        let sums = sums.expect("grad_accum >= 1 micro-batch");
        let read = Tensor::cat(vec![sums, sum_squares(&model, &grads)], 0).into_data().convert::<f64>();
        let read: Vec<f64> = read.try_to_vec::<f64>().map_err(|e| Error::runtime(format!("{e:?}")))?;
        let w = read[3].max(f32::MIN_POSITIVE as f64);
        let (mut loss_sum, ce_sum, kl_sum) = (read[0] / w, read[1] / w, read[2] / w);
        if fault == Some(st.step + 1) {
            (fault, loss_sum) = (None, f64::NAN);
        }
        let hidden_sum = job.hidden.is_some().then(|| read[4] / w);
        let aux_sum = (!loads.is_empty()).then(|| read[4 + hidden_sum.is_some() as usize] / w);
        let grad_norm = read[read.len() - 1].sqrt() / w;
        prof.mark("norm + read");
        if !loss_sum.is_finite() || !grad_norm.is_finite() {
            let what = if loss_sum.is_finite() {
                format!("gradient norm became {grad_norm}")
            } else {
                format!("loss became {loss_sum}")
            };
            let at = format!("{phase}: the {what} at step {}", st.step + 1);
            let budget = job.nan_retries;
            match job.on_nan {
                OnNan::Skip if st.skipped_in_a_row < budget => {
                    // The batch is consumed (the cursor moved) but nothing is applied.
                    st.skipped_in_a_row += 1;
                    eprintln!("warning: {at}; skipping that batch ({} of {budget} in a row)", st.skipped_in_a_row);
                    continue;
                }
                OnNan::Rollback if st.rollbacks < budget => {
                    let rollbacks = st.rollbacks + 1;
                    let (m, opt, mut back) = newest()?;
                    back.lr_scale = st.lr_scale * 0.5;
                    back.rollbacks = rollbacks;
                    eprintln!(
                        "warning: {at}; rolling back to step {} with the learning rate halved (x{}; rollback {rollbacks} of {budget})",
                        back.step, back.lr_scale
                    );
                    (model, optim, st) = (m, opt, back);
                    log = MetricsLog::open(&job.metrics, job.phase.name(), st.step)?;
                    read_ahead.pending = None;
                    continue;
                }
                _ => {
                    return Err(Error::runtime(format!(
                        "{at}; lower {phase} lr (now {lr:.2e}) or raise grad_clip, or set run.on_nan = \"skip\" or \"rollback\". The last good checkpoint is in {}",
                        ck_dir.display()
                    )));
                }
            }
        }
        st.skipped_in_a_row = 0;
        // Divide by the step's weight and clip to the global norm in the optimizer's pass.
        let clip = if o.grad_clip > 0.0 && grad_norm > o.grad_clip { o.grad_clip / (grad_norm + 1e-6) } else { 1.0 };
        let args = StepArgs { lr, grad_scale: clip / w, decay: 1.0 - lr * o.weight_decay, no_decay: &o.no_decay };
        model = optim.step(model, grads, args);
        prof.mark("optimizer");
        st.step += 1;
        st.tokens += step_tokens as u64;
        st.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        let tok_s = step_tokens as f64 / t0.elapsed().as_secs_f64();
        let curriculum_on = job.curriculum.as_ref().filter(|c| c.cfg.schedule != Schedule::None);
        let scheduled = job.alpha_end.is_some() || job.temperature_end.is_some();
        let mut row = MetricsRow {
            phase: phase.to_string(),
            step: st.step,
            lr,
            loss: loss_sum,
            ce: ce_sum,
            kl: (targets || on_policy_batches > 0).then_some(kl_sum),
            hidden: hidden_sum,
            router_aux: aux_sum,
            expert_load: (!loads.is_empty()).then_some(loads),
            grad_norm,
            tokens: st.tokens,
            loss_tokens: loss_tokens as u64,
            tok_per_s: tok_s,
            elapsed_s: st.elapsed_s,
            alpha: scheduled.then_some(kd.alpha),
            temperature: scheduled.then_some(kd.temperature),
            competence: curriculum_on.map(|c| curriculum::competence(&c.cfg, progress)),
            w_mean: curriculum_on.map(|_| wsum[0]),
            w_min: curriculum_on.map(|_| wsum[1]),
            w_max: curriculum_on.map(|_| wsum[2]),
            hard_share: curriculum_on.map(|_| wsum[3]),
            on_policy: job.on_policy.is_some().then_some(on_policy_batches),
            rollout_s: job.on_policy.is_some().then_some(rollout_s),
            ..Default::default()
        };
        pb.set_position(st.step as u64);
        pb.set_message(match job.teacher.is_some() {
            true => format!("loss {:.3} ce {:.3} kl {:.3} | {:.0} tok/s", loss_sum, ce_sum, kl_sum, tok_s),
            false => format!("loss {:.3} | {:.0} tok/s", loss_sum, tok_s),
        });
        if st.step % job.eval.every_steps == 0 || st.step == o.steps {
            let r = evaluate(&model.valid(), job.valid, o.batch_size, Some(job.eval.batches), device);
            row.eval_loss = Some(r.loss);
            row.eval_ppl = Some(r.ppl);
            let line = format!(
                "{phase} step {:>5}/{}: train loss {:.4}, held-out loss {:.4} (ppl {:.2}), {:.0} tok/s",
                st.step,
                o.steps,
                loss_sum,
                r.loss,
                r.ppl,
                st.tokens as f64 / st.elapsed_s
            );
            if pb.is_hidden() {
                println!("{line}");
            } else {
                pb.println(line);
            }
        }
        log.write(&row)?;
        if row.eval_loss.is_some()
            && let Err(e) = crate::report::plots::refresh(&job.metrics, None)
        {
            // The curves are for watching; a failed drawing does not stop training.
            eprintln!("warning: {e}");
        }
        let interrupted = job.stop.load(Ordering::SeqCst) || job.stop_after == Some(st.step);
        let due = st.step % job.checkpoint.every_steps == 0 || st.step == o.steps || interrupted;
        if due && job.checkpoints {
            checkpoint::save(&ck_dir, &model, &optim, &st, job.checkpoint.keep_last)?;
        }
        if interrupted && st.step < o.steps {
            pb.abandon();
            let saved = if job.checkpoints { " (checkpoint saved)" } else { "" };
            return Err(Error::Interrupted(format!("{phase} training stopped at step {}{saved}", st.step)));
        }
    }
    pb.finish_and_clear();
    if let Some(r) = prof.report() {
        eprintln!("{phase} {r}");
    }
    // The projection of a hidden-state loss served training only.
    let mut model = model.valid();
    model.hidden_proj = None;
    Ok(model)
}

/// The weights the step computes with: the bf16 copy under mixed precision, seen through
/// QAT's fake quantization once it has started (graph nodes over an autodiff master).
fn prepare(job: &TrainJob, model: &Decoder, step: usize) -> Result<Decoder> {
    let fwd = match job.precision.compute_dtype() {
        Some(dtype) => model.clone().cast(dtype),
        None => model.clone(),
    };
    match job.qat {
        Some((plan, start)) if step >= start => qat_view(&fwd, &plan),
        _ => Ok(fwd),
    }
}

fn phase_salt(p: Phase) -> u64 {
    match p {
        Phase::Teacher => 0x7eac_4e00,
        Phase::Student => 0x5747_de00,
    }
}

fn progress(job: &TrainJob, start: usize) -> ProgressBar {
    let pb = if job.quiet { ProgressBar::hidden() } else { ProgressBar::new(job.optim.steps as u64) };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} | ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(job.phase.name());
    pb.set_position(start as u64);
    pb
}

/// The sum of squares of all gradients, `[1]` on the device: the global L2 norm as torch's
/// `clip_grad_norm_` takes it (burn's own clipping is per tensor), without a read-back.
fn sum_squares(model: &Decoder, grads: &GradientsParams) -> Tensor<1> {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        all: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                let n = g.shape().num_elements();
                self.all.push(g.reshape([n]));
            }
        }
    }
    let mut v = SumSquares { grads, all: Vec::new() };
    model.visit(&mut v);
    #[cfg(feature = "tch")]
    if let Some(s) = crate::kernels::torch::sum_squares(&v.all) {
        return s;
    }
    let sq = v.all.into_iter().map(|g| g.square().sum()).reduce(|a, b| a + b);
    sq.unwrap_or_else(|| Tensor::zeros([1], &model.embed.weight.val().device()))
}

#[cfg(test)]
mod tests;
