//! Where a run's chat template and special-token spellings come from (the pipeline reads the
//! files; the data module only renders): `data.chat_template` if given, else the teacher's
//! (`tokenizer_config.json` in its folder, or the GGUF file's `tokenizer.chat_template`), else
//! a `tokenizer.path`'s `tokenizer_config.json`.

use std::path::Path;

use crate::data::chat::{ChatTemplate, Specials, template};
use crate::data::config::{DataFormat, TokenizerKind};
use crate::data::tokenizer::Tokenizer;
use crate::data::{ChatJob, tokenizer};
use crate::error::{Error, Result};
use crate::export::gguf::Value;
use crate::recipe::Recipe;
use crate::teacher::config::TeacherKind;

/// Whether the run's rows go through a chat template or a prompt/completion frame.
pub fn needs_chat(recipe: &Recipe) -> bool {
    recipe.data.row_format() != DataFormat::Text
}

/// A template text and the special tokens it prints, with where it came from.
struct Found {
    source: Option<(String, String)>,
    specials: Specials,
}

fn read_config(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    crate::util::read_json(path).map(Some)
}

/// A `tokenizer_config.json`'s template (by `data.chat_template_name`) and special tokens.
fn from_config(path: &Path, name: Option<&str>) -> Result<Found> {
    let Some(cfg) = read_config(path)? else {
        return Ok(Found { source: None, specials: Specials::default() });
    };
    let source = template::from_tokenizer_config(&cfg, name)
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))?
        .map(|t| (t, format!("{}: chat_template", path.display())));
    let specials =
        Specials { bos: template::special_of(&cfg, "bos_token"), eos: template::special_of(&cfg, "eos_token") };
    Ok(Found { source, specials })
}

/// A GGUF file's template and its BOS/EOS spellings.
fn from_gguf(path: &Path) -> Result<Found> {
    let g = crate::teacher::gguf_tokenizer::read_metadata(path)?;
    let source = match g.get("tokenizer.chat_template") {
        Some(Value::Str(s)) => Some((s.clone(), format!("{}: tokenizer.chat_template", path.display()))),
        _ => None,
    };
    let token = |key: &str| -> Option<String> {
        let id = match g.get(key)? {
            Value::U32(i) => *i as usize,
            Value::I32(i) => usize::try_from(*i).ok()?,
            Value::U64(i) => usize::try_from(*i).ok()?,
            _ => return None,
        };
        match g.get("tokenizer.ggml.tokens")? {
            Value::Strs(v) => v.get(id).cloned(),
            _ => None,
        }
    };
    let specials = Specials { bos: token("tokenizer.ggml.bos_token_id"), eos: token("tokenizer.ggml.eos_token_id") };
    Ok(Found { source, specials })
}

/// The tokenizer data will be encoded with, when it exists before the data (not trained).
fn known_tokenizer(recipe: &Recipe, teacher_tokenizer: Option<&Path>) -> Result<Option<Tokenizer>> {
    match recipe.tokenizer.kind {
        TokenizerKind::Train => Ok(None),
        TokenizerKind::File => Tokenizer::load(recipe.tokenizer.path.as_ref().expect("validated")).map(Some),
        TokenizerKind::Teacher => teacher_tokenizer.map(Tokenizer::load).transpose(),
    }
}

/// The [`ChatJob`] of `recipe`: its template and special-token spellings.
pub fn chat_job(recipe: &Recipe, teacher_tokenizer: Option<&Path>) -> Result<ChatJob> {
    if !needs_chat(recipe) {
        return Ok(ChatJob::default());
    }
    let d = &recipe.data;
    let name = d.chat_template_name.as_deref();
    // The teacher's (or the tokenizer file's) template and special tokens.
    let t = &recipe.teacher;
    let mut found = match (t.kind, &t.path) {
        (TeacherKind::Gguf, Some(p)) if p.is_file() => from_gguf(p)?,
        (TeacherKind::Hf | TeacherKind::Checkpoint, Some(p)) => from_config(&p.join("tokenizer_config.json"), name)?,
        _ => Found { source: None, specials: Specials::default() },
    };
    if found.source.is_none()
        && let (TokenizerKind::File, Some(p)) = (recipe.tokenizer.kind, &recipe.tokenizer.path)
    {
        let own = from_config(&p.with_file_name("tokenizer_config.json"), name)?;
        if own.source.is_some() {
            found = own;
        }
    }
    if let Some(p) = &d.chat_template {
        let text = crate::error::read_to_string(p).map_err(|e| Error::input(format!("data.chat_template: {e}")))?;
        found.source = Some((text, format!("data.chat_template = {}", p.display())));
    }
    let tok = known_tokenizer(recipe, teacher_tokenizer)?;
    // Specials the configuration does not spell come from the tokenizer itself.
    if recipe.tokenizer.kind == TokenizerKind::Train {
        found.specials.eos.get_or_insert_with(|| tokenizer::EOS.to_string());
    }
    if let Some(tok) = &tok {
        if found.specials.eos.is_none() {
            found.specials.eos = tok.token(tok.eos_id);
        }
        if found.specials.bos.is_none() {
            found.specials.bos = tok.bos_id.and_then(|b| tok.token(b));
        }
    }
    let plain_bos = tok.as_ref().and_then(|t| t.bos_id.and_then(|b| t.token(b)));
    let plain_eos = match &tok {
        Some(t) => t.token(t.eos_id).unwrap_or_else(|| tokenizer::EOS.to_string()),
        None => tokenizer::EOS.to_string(),
    };
    let template = match found.source {
        Some((text, origin)) => Some(ChatTemplate::new(&text, found.specials, &origin).map_err(Error::input)?),
        None => None,
    };
    if template.is_none() && d.row_format() == DataFormat::Chat {
        return Err(Error::input(
            "data.format = \"chat\" needs a chat template: set data.chat_template to a Jinja file, or use a teacher whose tokenizer_config.json or GGUF file has one",
        ));
    }
    Ok(ChatJob { template, plain_bos, plain_eos })
}

/// The ids that end a completion the run's models write: the tokenizer's EOS, and the chat
/// template's end-of-turn where it is another token (`<|im_end|>`, `<|eot_id|>`).
pub fn stop_ids(recipe: &Recipe, dir: &Path) -> Result<Vec<u32>> {
    let tok = Tokenizer::load(&crate::run_dir::RunDir(dir).tokenizer())?;
    Ok(stops_of(&tok, run_template(recipe, dir)?.as_ref()))
}

/// The tokenizer's EOS and, where they are other tokens, the template's EOS spelling and the
/// special token the template closes an assistant turn with (what follows the assistant's
/// content when it renders a probe conversation: ChatML's `<|im_end|>`, Llama 3's
/// `<|eot_id|>`), so a model stops where its turn ends.
pub fn stops_of(tok: &Tokenizer, template: Option<&ChatTemplate>) -> Vec<u32> {
    let mut stops = vec![tok.eos_id];
    let mut add = |id: u32| {
        if !stops.contains(&id) {
            stops.push(id);
        }
    };
    let Some(t) = template else { return stops };
    if let Some(id) = t.specials().eos.as_deref().and_then(|e| tok.id_of(e)) {
        add(id);
    }
    let msg = |role: &str, content: &str| crate::data::chat::Message {
        role: role.into(),
        content: content.into(),
        extra: Default::default(),
    };
    let probe = [msg("user", "Hi"), msg("assistant", "Fine.")];
    if let (Ok(before), Ok(full)) = (t.render(&probe[..1], true), t.render(&probe, false))
        && let Some(rest) = full.strip_prefix(before.as_str()).and_then(|r| r.trim_start().strip_prefix("Fine."))
        && let Ok(ids) = tok.encode(rest)
        && let Some(&first) = ids.first()
        && tok.is_added(first)
        && tok.token(first).is_some_and(|s| rest.starts_with(&s))
    {
        add(first);
    }
    stops
}

/// The chat template of the run in `dir` (as its data was rendered with), if its data is
/// chat or prompt/completion rows, or its teacher has one.
pub fn run_template(recipe: &Recipe, dir: &Path) -> Result<Option<ChatTemplate>> {
    let teacher_tokenizer = (recipe.tokenizer.kind == TokenizerKind::Teacher)
        .then(|| super::teacher::teacher_tokenizer_in(recipe, dir))
        .transpose()?;
    template_for(recipe, teacher_tokenizer.as_deref())
}

/// The chat template of `recipe`'s data or teacher, with the teacher's tokenizer.json at
/// `teacher_tokenizer` (its specials): what a conversation is rendered with, whatever the
/// recipe's data format.
pub fn template_for(recipe: &Recipe, teacher_tokenizer: Option<&Path>) -> Result<Option<ChatTemplate>> {
    let mut r = recipe.clone();
    if !needs_chat(&r) {
        // Asked for a conversation's prompt: the same lookup as for chat data.
        r.data.source = crate::data::config::SourceKind::Jsonl;
        r.data.format = DataFormat::PromptCompletion;
    }
    if r.tokenizer.kind == TokenizerKind::Train && teacher_tokenizer.is_some() {
        r.tokenizer.kind = TokenizerKind::Teacher;
    }
    Ok(chat_job(&r, teacher_tokenizer)?.template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::gguf::Gguf;

    /// A GGUF file's template and its BOS/EOS spellings, by token id as llama.cpp reads them.
    #[test]
    fn a_gguf_files_template_and_specials_are_read() {
        let dir = std::env::temp_dir().join(format!("distill-chat-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.gguf");
        let tokens: Vec<String> = ["<unk>", "<|im_start|>", "<|im_end|>", "a"].iter().map(|s| s.to_string()).collect();
        let g = Gguf {
            kv: vec![
                ("general.architecture".into(), Value::Str("llama".into())),
                ("tokenizer.chat_template".into(), Value::Str("{{ bos_token }}{{ messages[0].content }}".into())),
                ("tokenizer.ggml.tokens".into(), Value::Strs(tokens)),
                ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
                ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
            ],
            tensors: vec![],
        };
        std::fs::write(&p, g.to_bytes()).unwrap();
        let f = from_gguf(&p).unwrap();
        let (text, origin) = f.source.unwrap();
        assert_eq!(text, "{{ bos_token }}{{ messages[0].content }}");
        assert!(origin.ends_with("m.gguf: tokenizer.chat_template"), "{origin}");
        assert_eq!(f.specials, Specials { bos: Some("<|im_start|>".into()), eos: Some("<|im_end|>".into()) });
        std::fs::remove_dir_all(&dir).ok();
    }
}
