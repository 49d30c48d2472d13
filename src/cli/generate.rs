//! `distill generate`: sample from a run's student (or teacher), streamed to stdout.

use std::io::Write;

use super::flags::flag;
use super::{GenerateArgs, load_final, which};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::prompts::{self, PromptSpec};
use crate::generate::{Sampling, Timing, generate as sample_tokens, generate_batch, row_rng};
use crate::model::Decoder;
use crate::pipeline::{self, load_run_recipe};
use crate::quant::fake_quant::{Plan, Scheme, round_trip_model};
use crate::recipe::Recipe;

pub(super) fn generate(a: GenerateArgs) -> Result<()> {
    let r = load_run_recipe(&a.run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let top_p = super::flags::top_p(a.top_p)?;
    super::flags::temperature(a.temperature)?;
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
    if let Some(file) = &a.prompts {
        return batches(&a, file, &m, &tok, &r, &device);
    }
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

/// `--prompts`: every prompt of `file`, `--batch-size` at a time, one JSON line each (index,
/// prompt, completion, its token count and why it stopped). Row `i` draws from its own
/// generator (the seed and `i`), so the output does not depend on the batch size.
fn batches(
    a: &GenerateArgs,
    file: &std::path::Path,
    m: &Decoder,
    tok: &Tokenizer,
    r: &Recipe,
    device: &burn::tensor::Device,
) -> Result<()> {
    if a.batch_size == 0 {
        return Err(Error::input("--batch-size: expected at least 1"));
    }
    let Prompts { ids, shown, stops } = prompt_file(file, tok, r, &a.run_dir)?;
    let stops = if a.ignore_eos { Vec::new() } else { stops };
    let s =
        Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed, max_tokens: a.max_tokens };
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| Error::input(format!("--out {}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let (mut total, mut generated) = (Timing::default(), 0usize);
    let clock = std::time::Instant::now();
    for (b, chunk) in ids.chunks(a.batch_size).enumerate() {
        let first = b * a.batch_size;
        let rngs = (0..chunk.len()).map(|i| row_rng(a.seed, (first + i) as u64)).collect();
        let (rows, t) = generate_batch(m, chunk, rngs, &stops, &s, device);
        total += t;
        for (i, g) in rows.iter().enumerate() {
            generated += g.tokens.len();
            let line = serde_json::json!({
                "index": first + i,
                "prompt": shown[first + i],
                "completion": tok.decode(&g.tokens)?,
                "tokens": g.tokens.len(),
                "stop": g.stop,
            });
            writeln!(out, "{line}").map_err(|e| Error::runtime(format!("writing the completions: {e}")))?;
        }
    }
    out.flush().map_err(|e| Error::runtime(format!("writing the completions: {e}")))?;
    if a.stats {
        let wall = clock.elapsed().as_secs_f64();
        eprintln!(
            "generated {generated} tokens for {} prompts in {wall:.2} s: {:.0} tok/s (prefill {:.2} s, decode {:.2} s over {} steps, sampling {:.2} s)",
            ids.len(),
            generated as f64 / wall,
            total.prefill_s,
            total.decode_s,
            total.steps,
            total.sample_s
        );
    }
    Ok(())
}

/// A prompts file's prompts as token ids (chat messages through the run's template), the text
/// each was rendered to, and the ids that end a completion (EOS, the template's end of turn).
pub(super) struct Prompts {
    pub ids: Vec<Vec<u32>>,
    pub shown: Vec<String>,
    pub stops: Vec<u32>,
}

/// Read `file` (JSON Lines or one prompt per line; see `--prompts`) for the run in `run_dir`.
pub(super) fn prompt_file(
    file: &std::path::Path,
    tok: &Tokenizer,
    r: &Recipe,
    run_dir: &std::path::Path,
) -> Result<Prompts> {
    let text = crate::error::read_to_string(file)?;
    let jsonl = file.extension().is_some_and(|e| e == "jsonl" || e == "json");
    let specs = prompts::parse(&text, &file.display().to_string(), jsonl).map_err(Error::input)?;
    let chat = specs.iter().any(|p| matches!(p, PromptSpec::Messages(_)));
    let template = match chat {
        true => pipeline::chat::run_template(r, run_dir)?,
        false => None,
    };
    let mut ids = Vec::with_capacity(specs.len());
    let mut shown = Vec::with_capacity(specs.len());
    for (i, p) in specs.iter().enumerate() {
        let (text, templated) = prompts::render(p, template.as_ref())
            .map_err(|e| Error::input(format!("{}: prompt {}: {e}", file.display(), i + 1)))?;
        ids.push(if templated { tok.encode(&text)? } else { tok.encode_prompt(&text)? });
        shown.push(text);
    }
    Ok(Prompts { ids, shown, stops: pipeline::chat::stops_of(tok, template.as_ref()) })
}
