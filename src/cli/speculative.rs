//! `distill speculative`: the run's student drafts, its teacher verifies; acceptance and the
//! wall-clock speedup over the teacher alone on the same prompts. And the commands that show
//! a run: `distill report`, `distill runs`.

use super::generate::{Prompts, prompt_file};
use super::{ReportArgs, RunsArgs, SpeculativeArgs, load_final};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::Sampling;
use crate::pipeline::{self, load_run_recipe};
use crate::run_dir::RunDir;

pub(super) fn speculative(a: SpeculativeArgs) -> Result<()> {
    let draft_len = super::flags::draft_len(a.draft_len)?;
    super::flags::temperature(a.temperature)?;
    let top_p = super::flags::top_p(a.top_p)?;
    let r = load_run_recipe(&a.run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let tok = Tokenizer::load(&a.run_dir.join("tokenizer.json"))?;
    let Prompts { ids, stops, .. } = prompt_file(&a.prompts, &tok, &r, &a.run_dir)?;
    if ids.is_empty() {
        return Err(Error::input(format!("{}: no prompts", a.prompts.display())));
    }
    let (teacher, student) =
        pipeline::teacher_and_student(&r, &a.run_dir, &device, |p| load_final(&a.run_dir, p, &device))?;
    let s = Sampling { temperature: a.temperature, top_k: a.top_k, top_p, seed: a.seed, max_tokens: a.max_tokens };
    let (rep, _) = crate::speculative::measure(&teacher, &student, &ids, &stops, &s, draft_len, a.seed, &device);
    let json = serde_json::to_string(&rep).map_err(|e| Error::runtime(e.to_string()))?;
    // The latest figures stay with the run, for its report.
    crate::util::write_atomic(&RunDir(&a.run_dir).speculative_report(), format!("{json}\n").as_bytes())?;
    if a.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "speculative decoding, {} prompts, {} draft tokens, temperature {}, {:?}",
        rep.prompts, rep.draft_len, rep.temperature, r.run.backend
    );
    println!(
        "  acceptance          {:>8.1}%  ({} of {} drafted tokens)",
        100.0 * rep.acceptance,
        rep.stats.accepted,
        rep.stats.drafted
    );
    println!(
        "  tokens per call     {:>8.2}   (independent acceptance at that rate: {:.2})",
        rep.tokens_per_call, rep.expected_tokens_per_call
    );
    println!(
        "  speculative         {:>8.1} tokens/s  ({} tokens, {:.2} s)",
        rep.speculative_tok_s, rep.stats.tokens, rep.stats.seconds
    );
    println!(
        "  teacher alone       {:>8.1} tokens/s  ({} tokens, {:.2} s)",
        rep.teacher_tok_s, rep.teacher_tokens, rep.teacher_s
    );
    println!("  speedup             {:>8.2}x", rep.speedup);
    Ok(())
}

pub(super) fn report(a: ReportArgs) -> Result<()> {
    let rd = RunDir(&a.run_dir);
    if !rd.resolved_recipe().is_file() {
        return Err(Error::input(format!("{}: not a run directory (no recipe.resolved.toml)", a.run_dir.display())));
    }
    let out = a.out.unwrap_or_else(|| rd.report());
    crate::util::write_atomic(&out, crate::report::html::render(&a.run_dir).as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

pub(super) fn runs(a: RunsArgs) -> Result<()> {
    if !a.dir.is_dir() {
        return Err(Error::input(format!("{}: not a folder", a.dir.display())));
    }
    let rows = crate::report::runs::list(&a.dir);
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).map_err(|e| Error::runtime(e.to_string()))?);
        }
        return Ok(());
    }
    println!("{:<28} {:<9} {:>16} {:>14}  exports", "run", "status", "step", "best held-out");
    for r in &rows {
        let step = match (&r.phase, r.step) {
            (Some(p), Some(s)) => format!("{p} {s}/{}", r.steps.map_or("?".into(), |n| n.to_string())),
            _ => "-".into(),
        };
        let best = r.best_held_out.map_or("-".into(), |b| format!("{b:.4}"));
        let exports: Vec<String> = r.exports.iter().map(|(f, b)| format!("{f} ({:.1} MB)", *b as f64 / 1e6)).collect();
        println!("{:<28} {:<9} {step:>16} {best:>14}  {}", r.name, r.status, exports.join(", "));
        if let Some(d) = &r.detail {
            println!("{:<28} {d}", "");
        }
    }
    Ok(())
}
