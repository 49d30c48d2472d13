//! `distill synth`: the recipe's teacher writes responses to the prompts of its dataset (see
//! [`crate::synth`]). The pipeline reads the files: the teacher, its tokenizer and chat template,
//! the prompts.

use std::path::PathBuf;

use super::teacher::Teacher;
use super::{RunOptions, chat};
use crate::data::DataJob;
use crate::data::config::DataFormat;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::recipe::{Recipe, TeacherKind};
use crate::synth::shards::{SynthJob, SynthReport};
use crate::synth::{SynthPrompt, chat_prompt};

/// Where the shards go: `synth.out`, else `<run>/synth`.
pub fn out_dir(recipe: &Recipe) -> PathBuf {
    recipe.synth.out.clone().unwrap_or_else(|| recipe.run_dir().join("synth"))
}

/// The prompt of one JSONL/Parquet row (or synthetic dialogue) as a JSON string, or the text of
/// a text row (cut to a prefix later, by tokens).
fn row_prompt(recipe: &Recipe, row: &serde_json::Value) -> std::result::Result<String, String> {
    let d = &recipe.data;
    let field = |name: &str| row.get(name).ok_or_else(|| format!("no field `{name}`"));
    let prompt = match d.row_format() {
        DataFormat::Text => {
            return row
                .get(&d.field)
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("no string field `{}`", d.field));
        }
        DataFormat::Chat => {
            let msgs = crate::data::chat::messages(field(&d.messages_field)?, &d.messages_field)?;
            SynthPrompt::Chat { messages: chat_prompt(&msgs)? }
        }
        DataFormat::PromptCompletion => match field(&d.prompt_field)? {
            serde_json::Value::String(s) => SynthPrompt::Text { text: s.clone() },
            v => SynthPrompt::Chat { messages: crate::data::chat::messages(v, &d.prompt_field)? },
        },
    };
    Ok(serde_json::to_string(&prompt).expect("a prompt serializes"))
}

/// Run the recipe's synth job; a rerun continues where a killed one stopped.
pub fn synth(recipe: &Recipe, opts: &RunOptions, log: &mut dyn FnMut(String)) -> Result<(PathBuf, SynthReport)> {
    let kind = recipe.teacher.kind;
    if kind == TeacherKind::Pretrain {
        return Err(Error::input(
            "teacher.kind: synth needs a teacher that exists (\"hf\", \"gguf\" or \"checkpoint\"), not one the run pretrains",
        ));
    }
    let dir = recipe.run_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::input(format!("{}: cannot create: {e}", dir.display())))?;
    let device = super::device_for(recipe.run.backend);
    let teacher = Teacher::of(recipe, &dir);
    let tok_path = match kind {
        TeacherKind::Gguf => super::teacher::gguf_tokenizer_file(recipe, &dir)?,
        _ => recipe.teacher.path.as_ref().expect("validated").join("tokenizer.json"),
    };
    let tok = Tokenizer::load(&tok_path)?;
    let prompts = read_prompts(recipe, &tok, log)?;
    let template = match prompts.iter().any(|(p, _)| matches!(p, SynthPrompt::Chat { .. })) {
        true => {
            let t = chat::template_for(recipe, Some(&tok_path))?;
            Some(t.ok_or_else(|| {
                Error::input("synth: the prompts are conversations, and neither data.chat_template nor the teacher gives a chat template")
            })?)
        }
        false => None,
    };
    let mut ids = Vec::with_capacity(prompts.len());
    for (i, (p, prefix)) in prompts.iter().enumerate() {
        ids.push(match (p, prefix) {
            (_, Some(prefix)) => tok.bos_id.into_iter().chain(prefix.iter().copied()).collect(),
            (SynthPrompt::Chat { messages }, None) => {
                let t = template.as_ref().expect("set for chat prompts");
                let text =
                    t.render(messages, true).map_err(|e| Error::input(format!("synth: prompt {}: {e}", i + 1)))?;
                tok.encode(&text)?
            }
            (SynthPrompt::Text { text }, None) => tok.encode_prompt(text)?,
        });
    }
    let prompts: Vec<SynthPrompt> = prompts.into_iter().map(|(p, _)| p).collect();
    log(format!("synth: {} prompts from {}", prompts.len(), crate::data::source::describe(&recipe.data)));
    let model = teacher.load_before_data(&device)?;
    let identity = serde_json::json!({"source": teacher.source(), "sha256": teacher.hash()?});
    let stops = chat::stops_of(&tok, template.as_ref());
    let out = out_dir(recipe);
    let decode = |t: &[u32]| tok.decode(t);
    let job = SynthJob {
        cfg: &recipe.synth,
        seed: recipe.run.seed,
        model: &model,
        teacher: identity,
        prompts: &prompts,
        ids: &ids,
        stops: &stops,
        decode: &decode,
        out: &out,
        device: &device,
        quiet: opts.quiet,
        stop_after_shards: opts.stop_after.map(|(_, n)| n),
    };
    let report = crate::synth::shards::run(&job, log)?;
    Ok((out, report))
}

/// The prompts of the recipe's data, in source order, at most `synth.max_prompts`; text rows
/// carry their prefix ids (cut by tokens, recorded as their decoded text).
fn read_prompts(
    recipe: &Recipe,
    tok: &Tokenizer,
    log: &mut dyn FnMut(String),
) -> Result<Vec<(SynthPrompt, Option<Vec<u32>>)>> {
    let cfg = &recipe.synth;
    let text = recipe.data.row_format() == DataFormat::Text;
    let limit = cfg.max_prompts.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let job = DataJob::new(&recipe.data, &recipe.tokenizer, recipe.run.seed);
    let enough = "enough prompts";
    let res = crate::data::source::for_each_row(&job, &|row| row_prompt(recipe, row), &mut |s| {
        if out.len() >= limit {
            return Err(Error::Interrupted(enough.into()));
        }
        out.push(match text {
            true => {
                let mut ids = tok.encode(&s)?;
                ids.truncate(cfg.prefix_tokens);
                (SynthPrompt::Text { text: tok.decode(&ids)? }, Some(ids))
            }
            false => (serde_json::from_str(&s).expect("row_prompt writes JSON"), None),
        });
        Ok(())
    });
    match res {
        Ok(bad) if bad.count > 0 => log(format!(
            "synth: {} rows skipped (first: {})",
            bad.count,
            bad.examples.first().cloned().unwrap_or_default()
        )),
        Ok(_) => {}
        Err(Error::Interrupted(m)) if m == enough => {}
        Err(e) => return Err(e),
    }
    if out.is_empty() {
        return Err(Error::input(format!("synth: no prompts in {}", crate::data::source::describe(&recipe.data))));
    }
    Ok(out)
}
