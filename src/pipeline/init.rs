//! The student's first weights (`student.init`): none (a seeded random init, made by the
//! trainer), a Hugging Face folder or GGUF file, or the teacher pruned by importance. A loaded
//! or pruned student is written once to `<run>/student/init/` and read from there afterwards,
//! so that a resumed or rolled-back run starts from the same weights without redoing the work.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use serde::Serialize;

use super::teacher::Teacher;
use crate::data::RunData;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::import::{ModelFiles, StudentInit, same_vocabulary};
use crate::model::prune::{self, Importance, PrunePlan};
use crate::model::{Decoder, store};
use crate::recipe::Recipe;
use crate::run_dir::{Phase, RunDir};

/// Where the first weights of the run in `dir` are kept.
pub fn init_dir(dir: &Path) -> PathBuf {
    RunDir(dir).phase(Phase::Student).join("init")
}

/// The student's first weights, or `None` for a random start. `teacher` is the loaded teacher
/// when the run has one (pruning loads it otherwise).
pub fn student_init(
    recipe: &Recipe,
    dir: &Path,
    d: &RunData,
    teacher: Option<&Decoder>,
    device: &Device,
    log: &mut dyn FnMut(String),
) -> Result<Option<Decoder>> {
    let init = recipe.student.init;
    if init.is_random() {
        return Ok(None);
    }
    let kept = init_dir(dir);
    if kept.join("model.json").is_file() {
        let (m, hash) = store::load(&kept, device)?;
        if hash != d.tok_hash {
            return Err(Error::input(format!(
                "{}: the student's first weights were made for another tokenizer than the run's data",
                kept.display()
            )));
        }
        return Ok(Some(m));
    }
    let model = match init {
        StudentInit::Prune => {
            let owned;
            let t = match teacher {
                Some(t) => t,
                None => {
                    owned = Teacher::of(recipe, dir).load_before_data(device)?;
                    &owned
                }
            };
            let (m, imp, plan) = pruned(recipe, d, t, device)?;
            write_prune_report(&RunDir(dir).phase(Phase::Student).join("prune"), &imp, &plan)?;
            log(format!("student: pruned from the teacher to {}", describe(&m)));
            m
        }
        _ => {
            let p = recipe.student.path.as_ref().expect("validated");
            let m = loaded(ModelFiles::student(init, p).expect("hf or gguf"), dir, d, device)?;
            log(format!("student: {} ({} parameters in matmuls)", p.display(), m.config.matmul_params()));
            m
        }
    };
    // The float values as trained: a half-precision teacher's pruned copy trains in f32.
    let mut model = model.cast(DType::F32);
    if let Some(moe) = &recipe.student.shape().moe {
        model = crate::model::moe::upcycle_decoder(model, moe, recipe.run.seed);
        log(format!(
            "student: upcycled to {} experts (top-{}) in every {} layer(s)",
            moe.experts, moe.active, moe.every
        ));
    }
    store::save(&kept, &model, &d.tok_hash)?;
    Ok(Some(model))
}

/// A pruned model's shape in a line: what `distill prune` and a run's log print.
pub fn describe(m: &Decoder) -> String {
    let s = &m.config.shape;
    format!(
        "{} layers, d_model {}, d_ff {}, {} heads / {} KV heads ({} parameters in matmuls)",
        s.n_layers,
        s.d_model,
        s.d_ff,
        s.n_heads,
        s.n_kv_heads,
        m.config.matmul_params()
    )
}

/// A student from an HF folder or GGUF file, checked against the run's vocabulary: the same
/// tokens id for id, and as many output rows as the teacher's.
fn loaded(files: ModelFiles, dir: &Path, d: &RunData, device: &Device) -> Result<Decoder> {
    let what = files.path().display().to_string();
    let scratch = RunDir(dir).phase(Phase::Student).join("tokenizer.json");
    let own = files.tokenizer_file(&scratch)?.expect("HF and GGUF students have a vocabulary");
    same_vocabulary(&Tokenizer::load(&RunDir(dir).tokenizer())?, &Tokenizer::load(&own)?, &what)?;
    let config = files.config()?;
    if config.vocab_size != d.vocab {
        return Err(Error::input(format!(
            "{what}: the student predicts over {} ids, the teacher over {}: they must match",
            config.vocab_size, d.vocab
        )));
    }
    files.load(device, DType::F32)
}

/// The teacher cut to the recipe's student shape by importance from one calibration pass
/// over the first `calibration_rows` training rows (in the run's seeded order).
pub fn pruned(
    recipe: &Recipe,
    d: &RunData,
    teacher: &Decoder,
    device: &Device,
) -> Result<(Decoder, Importance, PrunePlan)> {
    let p = recipe.student.prune.clone().unwrap_or_default();
    let n = p.calibration_rows.min(d.train.n_rows());
    let rows = d.train.rows_at_ordered(recipe.run.seed, 0, n, None);
    let batches: Vec<_> =
        rows.chunks(recipe.optim.batch_size.max(1)).map(|r| d.train.batch(r, device).inputs).collect();
    let imp = prune::importance(teacher, &batches)?;
    // Every key the recipe does not shrink is the teacher's own (biases, windows, scaling).
    let s = recipe.student.shape();
    let target = crate::model::ModelShape {
        d_model: s.d_model,
        n_layers: s.n_layers,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        d_ff: s.d_ff,
        attention_impl: s.attention_impl,
        ..teacher.config.shape.clone()
    };
    let (m, plan) = prune::prune(teacher, &imp, &target, p.depth)?;
    Ok((m, imp, plan))
}

/// `importance.json` (scores and what was kept) and `importance.svg` in `out`.
pub fn write_prune_report(out: &Path, imp: &Importance, plan: &PrunePlan) -> Result<()> {
    #[derive(Serialize)]
    struct Report<'a> {
        importance: &'a Importance,
        kept: &'a PrunePlan,
    }
    std::fs::create_dir_all(out).map_err(|e| Error::runtime(format!("{}: {e}", out.display())))?;
    crate::util::write_json_atomic(&out.join("importance.json"), &Report { importance: imp, kept: plan })?;
    prune::plot(imp, plan, &out.join("importance.svg"))
}
