//! The pipeline's commands: `run`, `cache-teacher`, `resume`, `eval`, `export`, `data` and
//! `validate`.

use std::path::Path;

use super::flags::flag;
use super::{
    CacheTeacherArgs, EvalArgs, ExportArgs, RecipeArgs, ResumeArgs, RunArgs, load_final, say, stop_flag, which,
};
use crate::data;
use crate::error::{Error, Result};
use crate::eval;
use crate::export::ExportFormat;
use crate::pipeline::{self, RunOptions, load_run_recipe};
use crate::quant::fake_quant::{Plan, Scheme, round_trip_model};
use crate::recipe::Recipe;
use crate::run_dir::Phase;
use crate::run_dir::RunDir;

pub(super) fn run(a: RunArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe.recipe, &a.recipe.set)?;
    let stop = stop_flag();
    println!("run directory: {}", r.run_dir().display());
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    pipeline::run(&r, &opts, &mut say).map_err(|e| with_resume_hint(e, &r.run_dir()))?;
    Ok(())
}

pub(super) fn cache_teacher(a: CacheTeacherArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe.recipe, &a.recipe.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    let m = pipeline::cache_teacher(&r, &opts, &mut say)?;
    println!(
        "teacher cache {}: {} shards, {} tokens, k = {}, {:?} values, {:.1} bytes/token ({:.2} MB)",
        r.cache_dir().display(),
        m.shards.len(),
        m.tokens,
        m.id.k,
        m.id.values,
        m.bytes_per_token(),
        m.bytes as f64 / 1e6
    );
    Ok(())
}

pub(super) fn prune(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: false };
    let m = pipeline::prune(&r, &opts, &mut say)?;
    let dir = RunDir(&r.run_dir()).phase(Phase::Student);
    println!("pruned student: {}: {}", dir.join("init").display(), pipeline::init::describe(&m));
    println!(
        "importance: {}, {}",
        dir.join("prune/importance.json").display(),
        dir.join("prune/importance.svg").display()
    );
    Ok(())
}

pub(super) fn resume(a: ResumeArgs) -> Result<()> {
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    pipeline::resume(&a.run_dir, &opts, &mut say).map_err(|e| with_resume_hint(e, &a.run_dir))?;
    Ok(())
}

pub(super) fn eval(a: EvalArgs) -> Result<()> {
    let run_dir = &a.run_dir;
    let r = load_run_recipe(run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let packing = match &a.packing {
        Some(p) => flag::<crate::data::config::Packing>("--packing", p)?,
        None => r.data.packing,
    };
    let d = data::load_prepared(run_dir)?.pack(r.data.seq_len, packing);
    // The run's teacher wherever it lives: pretrained in the run, a checkpoint or an HF folder
    // (checked against the run's tokenizer, as the run did).
    let teacher = pipeline::teacher::Teacher::of(&r, run_dir)
        .obtain(&d, &device, &mut |_| {}, |_| load_final(run_dir, Phase::Teacher, &device))?;
    let valid = d.valid;
    let student = match &a.checkpoint {
        Some(which) => pipeline::student_checkpoint(&r, run_dir, which, teacher.config.vocab_size, &device)?,
        None => load_final(run_dir, Phase::Student, &device)?,
    };
    let schemes = a.ptq.iter().map(|s| flag::<Scheme>("--ptq", s)).collect::<Result<Vec<_>>>()?;
    // The run's `[qat]` says whether the embedding table and LM head are quantized too.
    let base = r.qat.plan();
    let plans: Vec<_> = schemes
        .iter()
        .map(|&scheme| match a.ptq_embeddings {
            true => Plan { scheme, embeddings: true, lm_head: true, ..base },
            false => Plan { scheme, ..base },
        })
        .collect();
    // Every variant in memory (students are small), then one pass over the held-out split.
    let mut names = vec!["student int8".to_string()];
    let mut variants = vec![crate::quant::int8::fake_quant_model(&student)];
    for p in &plans {
        let tables = if p.embeddings || p.lm_head { "+emb" } else { "" };
        names.push(format!("student {} PTQ{tables}", p.scheme));
        variants.push(round_trip_model(&student, p)?);
    }
    for path in &a.exported {
        let m = crate::export::open(path, &device)?;
        if m.config.vocab_size != student.config.vocab_size {
            return Err(Error::input(format!(
                "{}: a vocabulary of {}, the run's student has {}",
                path.display(),
                m.config.vocab_size,
                student.config.vocab_size
            )));
        }
        names.push(path.display().to_string());
        variants.push(m);
    }
    let refs: Vec<&crate::model::Decoder> = variants.iter().collect();
    let rows = eval::compare(&teacher, &student, &refs, &valid, r.optim.batch_size, &device);
    let policy = (a.policy > 0).then(|| -> Result<_> {
        let stops = pipeline::chat::stop_ids(&r, run_dir)?;
        let batch = r.optim.batch_size;
        Ok(crate::on_policy::eval::policy_eval(
            &student,
            &teacher,
            &valid,
            a.policy,
            a.policy_tokens,
            &stops,
            batch,
            &device,
        ))
    });
    let policy = policy.transpose()?;
    let speculative = match &a.speculative {
        Some(file) => {
            if a.draft_len == 0 || a.draft_len > 64 {
                return Err(Error::input(format!("--draft-len: expected 1 to 64 tokens, got {}", a.draft_len)));
            }
            let tok = crate::data::tokenizer::Tokenizer::load(&RunDir(run_dir).tokenizer())?;
            let p = super::generate::prompt_file(file, &tok, &r, run_dir)?;
            let s = crate::generate::Sampling::greedy(64);
            Some(crate::speculative::measure(&teacher, &student, &p.ids, &p.stops, &s, a.draft_len, 0, &device).0)
        }
        None => None,
    };
    let models: Vec<serde_json::Value> = ["teacher".to_string(), "student f32".to_string()]
        .iter()
        .chain(&names)
        .zip(&rows)
        .map(|(name, c)| {
            serde_json::json!({
                "model": name, "loss": c.eval.loss, "ppl": c.eval.ppl, "tokens": c.eval.tokens,
                "kl_student": c.kl_student, "kl_teacher": c.kl_teacher, "kl_reverse": c.kl_reverse,
                "agreement": c.agreement, "ece": c.ece,
            })
        })
        .collect();
    let json =
        serde_json::json!({"models": models, "policy": policy, "speculative": speculative, "checkpoint": a.checkpoint});
    // The latest evaluation stays with the run, for its report.
    crate::util::write_atomic(&RunDir(run_dir).eval_report(), format!("{json}\n").as_bytes())?;
    if a.json {
        println!("{json}");
        return Ok(());
    }
    // KL(student f32 || model), KL(teacher || model) and KL(model || teacher), nats per token;
    // top-1 agreement with the teacher; expected calibration error against the data.
    println!(
        "held-out: {} tokens{}",
        rows[0].eval.tokens,
        a.checkpoint.as_ref().map(|c| format!(", student of checkpoint {c}")).unwrap_or_default()
    );
    println!(
        "{:<28} {:>8} {:>10} {:>12} {:>12} {:>12} {:>9} {:>7}",
        "model", "loss", "perplexity", "KL(f32||.)", "KL(teach||.)", "KL(.||teach)", "agreement", "ECE"
    );
    let names = ["teacher".to_string(), "student f32".to_string()].into_iter().chain(names);
    for (i, (name, c)) in names.zip(&rows).enumerate() {
        let kl = |x: f64| if i == 0 { String::new() } else { format!("{x:.5}") };
        println!(
            "{name:<28} {:>8.4} {:>10.4} {:>12} {:>12} {:>12} {:>9.4} {:>7.4}",
            c.eval.loss,
            c.eval.ppl,
            kl(c.kl_student),
            kl(c.kl_teacher),
            kl(c.kl_reverse),
            c.agreement,
            c.ece
        );
    }
    if let Some(sp) = &speculative {
        println!(
            "speculative decoding (greedy, {} prompts, {} draft tokens): acceptance {:.1}%, {:.2} tokens per teacher call (independent acceptance: {:.2}), {:.2}x the teacher alone",
            sp.prompts,
            sp.draft_len,
            100.0 * sp.acceptance,
            sp.tokens_per_call,
            sp.expected_tokens_per_call,
            sp.speedup
        );
    }
    if let Some(p) = policy {
        println!(
            "student's greedy text on {} held-out prompts ({} tokens): teacher log-prob {:.4} per token, top-1 agreement {:.4}",
            p.prompts, p.tokens, p.teacher_logprob, p.agreement
        );
    }
    Ok(())
}

pub(super) fn export(a: ExportArgs) -> Result<()> {
    let format: ExportFormat = flag("--format", &a.format)?;
    let r = load_run_recipe(&a.run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let m = load_final(&a.run_dir, which(a.teacher), &device)?;
    let out = a.out.unwrap_or_else(|| RunDir(&a.run_dir).export());
    // A file in another quantizer than the one the run trained against is post-training
    // quantization of the trained weights, not what was trained: say so.
    let file_scheme = match format {
        ExportFormat::GgufQ8_0 => Some(Scheme::Q8_0),
        ExportFormat::GgufQ4_0 => Some(Scheme::Q4_0),
        ExportFormat::Int4 if !matches!(r.qat.scheme, Scheme::Int4 { .. }) => Some(Scheme::Q4_0),
        ExportFormat::Int4 => Some(r.qat.scheme),
        _ => None,
    };
    if let Some(f) = file_scheme
        && r.qat.enabled
        && !a.teacher
        && f != r.qat.scheme
    {
        eprintln!(
            "note: the run trained against {}; this file holds the {f} quantization of its weights",
            r.qat.scheme
        );
    }
    let (p, size) = crate::export::export(&m, format, &r.qat.plan(), &out, &RunDir(&a.run_dir).tokenizer())?;
    println!("wrote {} ({size} bytes)", p.display());
    Ok(())
}

pub(super) fn synth(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: false };
    let (out, report) = pipeline::synth::synth(&r, &opts, &mut say)?;
    let files = out.join("shard-*.jsonl");
    let format = match r.data.row_format() {
        crate::data::config::DataFormat::Text => "prompt_completion",
        _ => "chat",
    };
    println!(
        "{} rows in {}; train on them with [data] source = \"jsonl\", paths = [\"{}\"], format = \"{format}\"",
        report.rows,
        out.display(),
        files.display()
    );
    Ok(())
}

pub(super) fn data(a: RecipeArgs) -> Result<()> {
    // Ctrl-C / SIGTERM stop the preparation at the next document (exit 130 / 143).
    let _stop = stop_flag();
    let r = Recipe::load(&a.recipe, &a.set)?;
    let dir = r.run_dir();
    if RunDir(&dir).data_meta().is_file() {
        println!("data already prepared in {}", RunDir(&dir).data().display());
    }
    pipeline::prepare_data_to_disk(&r, &dir, &mut say)?;
    println!("report: {}", RunDir(&dir).filter_report().display());
    Ok(())
}

pub(super) fn validate(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    pipeline::preflight(&r)?;
    print!("{}", r.to_toml());
    eprintln!("{}: ok", a.recipe.display());
    Ok(())
}

/// A stopped or failed run can always be continued: say how.
fn with_resume_hint(e: Error, dir: &Path) -> Error {
    match e {
        Error::Interrupted(m) => Error::Interrupted(format!("{m}; continue with `distill resume {}`", dir.display())),
        Error::Runtime(m) => {
            Error::Runtime(format!("{m}\n(the run can be continued with `distill resume {}`)", dir.display()))
        }
        other => other,
    }
}
