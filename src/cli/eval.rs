//! `distill eval`: a finished run's (or a checkpoint's) student against its teacher on the
//! held-out split, with quantized variants and exports; from the teacher's cache alone when
//! the teacher itself is gone.

use super::flags::flag;
use super::{EvalArgs, load_final};
use crate::data;
use crate::error::{Error, Result};
use crate::eval;
use crate::model::Decoder;
use crate::pipeline::{self, load_run_recipe};
use crate::quant::fake_quant::{Plan, Scheme, round_trip_model};
use crate::recipe::Recipe;
use crate::run_dir::{Phase, RunDir};

pub(super) fn eval(a: EvalArgs) -> Result<()> {
    let run_dir = &a.run_dir;
    let r = load_run_recipe(run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let packing = match &a.packing {
        Some(p) => flag::<crate::data::config::Packing>("--packing", p)?,
        None => r.data.packing,
    };
    // The data as the run packed it (what its cache was made from), and the held-out split
    // packed as asked when that differs.
    let d = data::load_prepared(run_dir)?.pack(r.data.seq_len, r.data.packing);
    let repacked = match packing == r.data.packing {
        true => None,
        false => Some(data::load_prepared(run_dir)?.pack(r.data.seq_len, packing).valid),
    };
    let valid = repacked.as_ref().unwrap_or(&d.valid);
    if let Some(cache) = pipeline::cache_without_teacher(&r, run_dir, &d)? {
        return cached(&a, &r, valid, &d.train, &cache, &device);
    }
    // The run's teacher wherever it lives: pretrained in the run, a checkpoint or an HF folder
    // (checked against the run's tokenizer, as the run did).
    let teacher = pipeline::teacher::Teacher::of(&r, run_dir)
        .obtain(&d, &device, &mut |_| {}, |_| load_final(run_dir, Phase::Teacher, &device))?;
    let student = match &a.checkpoint {
        Some(which) => pipeline::student_checkpoint(&r, run_dir, which, teacher.config.vocab_size, &device)?,
        None => load_final(run_dir, Phase::Student, &device)?,
    };
    let (names, variants) = variants(&a, &r, &student, &device)?;
    let refs: Vec<&crate::model::Decoder> = variants.iter().collect();
    let rows = eval::compare(&teacher, &student, &refs, valid, r.optim.batch_size, &device);
    let policy = (a.policy > 0).then(|| -> Result<_> {
        let stops = pipeline::chat::stop_ids(&r, run_dir)?;
        let batch = r.optim.batch_size;
        Ok(crate::on_policy::eval::policy_eval(
            &student,
            &teacher,
            valid,
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
            let draft_len = super::flags::draft_len(a.draft_len)?;
            let tok = crate::data::tokenizer::Tokenizer::load(&RunDir(run_dir).tokenizer())?;
            let p = super::generate::prompt_file(file, &tok, &r, run_dir)?;
            let s = crate::generate::Sampling::greedy(64);
            Some(crate::speculative::measure(&teacher, &student, &p.ids, &p.stops, &s, draft_len, 0, &device).0)
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

/// The student's variants `eval` compares besides it, with their names: its int8 round trip,
/// each `--ptq` scheme's, and each `--exported` file (every one in memory: students are small).
fn variants(
    a: &EvalArgs,
    r: &Recipe,
    student: &Decoder,
    device: &burn::tensor::Device,
) -> Result<(Vec<String>, Vec<Decoder>)> {
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
    let mut variants = vec![crate::quant::int8::fake_quant_model(student)];
    for p in &plans {
        let tables = if p.embeddings || p.lm_head { "+emb" } else { "" };
        names.push(format!("student {} PTQ{tables}", p.scheme));
        variants.push(round_trip_model(student, p)?);
    }
    for path in &a.exported {
        let m = crate::export::open(path, device)?;
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
    Ok((names, variants))
}

/// `eval` from the teacher's cache alone (the teacher's files are gone): each model's held-out
/// loss, perplexity and calibration error, and its top-1 agreement with the cache's top-1 at
/// the cached positions of the first training rows; the teacher's held-out loss as the cache
/// recorded it. The KLs need the teacher's whole distributions, which the cache does not hold.
fn cached(
    a: &EvalArgs,
    r: &Recipe,
    valid: &crate::data::pack::Packed,
    train: &crate::data::pack::Packed,
    cache: &crate::teacher::cache::CacheReader,
    device: &burn::tensor::Device,
) -> Result<()> {
    if a.policy > 0 || a.speculative.is_some() {
        return Err(Error::input(
            "--policy and --speculative need the live teacher; this run's teacher is only in its cache (teacher.path is gone)",
        ));
    }
    let run_dir = &a.run_dir;
    let student = match &a.checkpoint {
        Some(which) => pipeline::student_checkpoint(r, run_dir, which, cache.manifest.id.vocab_size, device)?,
        None => load_final(run_dir, Phase::Student, device)?,
    };
    let (names, variants) = variants(a, r, &student, device)?;
    let models: Vec<&Decoder> = std::iter::once(&student).chain(&variants).collect();
    // Agreement over the first 64 rows: enough tokens for a steady share, one pass of each model.
    let rows = eval::compare_cached(&models, valid, train, cache, 64, r.optim.batch_size, device)?;
    let held = cache.manifest.teacher.held_out.as_ref();
    let names: Vec<String> = std::iter::once("student f32".to_string()).chain(names).collect();
    let need = "KL(teacher||model), KL(model||teacher) and held-out agreement need the live teacher";
    let mut out: Vec<serde_json::Value> = vec![serde_json::json!({
        "model": "teacher", "loss": held.map(|h| h.loss), "ppl": held.map(|h| h.loss.exp()), "tokens": held.map(|h| h.tokens),
        "kl_student": null, "kl_teacher": null, "kl_reverse": null, "agreement": null, "ece": null,
    })];
    out.extend(names.iter().zip(&rows).map(|(name, c)| {
        serde_json::json!({
            "model": name, "loss": c.eval.loss, "ppl": c.eval.ppl, "tokens": c.eval.tokens,
            "kl_student": null, "kl_teacher": null, "kl_reverse": null,
            "agreement": c.agreement, "agreement_tokens": c.agreement_tokens, "ece": c.ece,
        })
    }));
    let json = serde_json::json!({
        "models": out, "policy": null, "speculative": null, "checkpoint": a.checkpoint,
        "teacher": "cache", "agreement_on": "cached training positions", "missing": need,
    });
    crate::util::write_atomic(&RunDir(run_dir).eval_report(), format!("{json}\n").as_bytes())?;
    if a.json {
        println!("{json}");
        return Ok(());
    }
    println!("from the teacher's cache {} (the teacher's files are gone): {need}", r.cache_dir().display());
    println!("{:<28} {:>8} {:>10} {:>7} {:>22}", "model", "loss", "perplexity", "ECE", "agreement (cached)");
    if let Some(h) = held {
        println!("{:<28} {:>8.4} {:>10.4}   (recorded when the cache was built)", "teacher", h.loss, h.loss.exp());
    }
    for (name, c) in names.iter().zip(&rows) {
        println!(
            "{name:<28} {:>8.4} {:>10.4} {:>7.4} {:>10.4} of {:>7} tokens",
            c.eval.loss, c.eval.ppl, c.ece, c.agreement, c.agreement_tokens
        );
    }
    Ok(())
}
