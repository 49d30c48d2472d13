//! `distill generate`: sample from a run's student (or teacher), streamed to stdout.

use std::io::Write;

use super::flags::flag;
use super::{GenerateArgs, load_final, which};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{Sampling, generate as sample_tokens};
use crate::pipeline::{self, load_run_recipe};
use crate::quant::fake_quant::{Plan, Scheme, round_trip_model};

pub(super) fn generate(a: GenerateArgs) -> Result<()> {
    let r = load_run_recipe(&a.run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let top_p = a.top_p;
    if !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        return Err(Error::input(format!("--top-p: expected a value in (0, 1], got {top_p}")));
    }
    let mut m = match &a.exported {
        Some(path) => crate::export::open(path, &device)?,
        None => load_final(&a.run_dir, which(a.teacher), &device)?,
    };
    if let Some(q) = &a.quant {
        // The weights a GGUF export of this run holds (the run's `[qat]` says whether the
        // embedding table and LM head are quantized too).
        let scheme: Scheme = flag("--quant", q)?;
        m = round_trip_model(&m, &Plan { scheme, ..r.qat.plan() })?;
    }
    let tok = Tokenizer::load(&a.run_dir.join("tokenizer.json"))?;
    let ids = tok.encode_prompt(&a.prompt)?;
    let s = Sampling { temperature: a.temperature, top_k: a.top_k, top_p, seed: a.seed, max_tokens: a.max_tokens };
    if a.ids {
        let out = sample_tokens(&m, &ids, tok.eos_id, &s, &device, |_| {});
        println!("{}", serde_json::json!({"prompt": ids, "generated": out}));
        return Ok(());
    }
    print!("{}", a.prompt);
    let mut shown = String::new();
    let mut so_far = Vec::new();
    sample_tokens(&m, &ids, tok.eos_id, &s, &device, |id| {
        // Decode the whole continuation and print what is new, so multi-token
        // characters appear whole.
        so_far.push(id);
        if let Ok(text) = tok.decode(&so_far)
            && text.len() > shown.len()
            && text.starts_with(&shown)
        {
            print!("{}", &text[shown.len()..]);
            let _ = std::io::stdout().flush();
            shown = text;
        }
    });
    println!();
    Ok(())
}
