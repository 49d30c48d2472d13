//! A model's chat template (Jinja), rendered as transformers' `apply_chat_template` renders it:
//! `trim_blocks` and `lstrip_blocks` on, no trailing newline kept, Python's string methods
//! (`.strip()`, `.startswith()`, ...) through minijinja-contrib's pycompat, and the names
//! transformers passes: `messages`, `add_generation_prompt`, `bos_token`, `eos_token` and
//! `raise_exception`.
//!
//! A template is untrusted input (it comes with a downloaded model): rendering is sandboxed by
//! minijinja (no file or network access) and bounded by fuel, so a template that loops for
//! ever fails with an error instead of hanging the run.

use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

/// Instructions one rendering may execute: generous for any real template (SmolLM2's takes a
/// few hundred per message), small enough that a runaway loop fails within a second.
const FUEL: u64 = 5_000_000;

/// A message as templates read it: `role`, `content`, and any other fields the row had
/// (`name`, `tool_calls`, ...), passed through.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The special-token spellings a template may print.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Specials {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    specials: Specials,
    /// Where the template came from, for errors.
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatTemplate({})", self.origin)
    }
}

/// The message a failed rendering gives: `raise_exception`'s text alone, else minijinja's.
fn describe(e: &minijinja::Error) -> String {
    match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) if d.starts_with("raise_exception: ") => {
            d["raise_exception: ".len()..].to_string()
        }
        _ => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

impl ChatTemplate {
    /// `source` is the Jinja text; `origin` names where it came from (a file, a key).
    pub fn new(source: &str, specials: Specials, origin: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
        });
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| format!("{origin}: not a valid chat template: {}", describe(&e)))?;
        Ok(ChatTemplate { env, specials, origin: origin.to_string() })
    }

    /// The BOS and EOS spellings the template prints.
    pub fn specials(&self) -> &Specials {
        &self.specials
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The text of `messages`, with the assistant's opening when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let t = self.env.get_template("chat_template").map_err(|e| describe(&e))?;
        let ctx = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.specials.bos.clone().unwrap_or_default(),
            eos_token => self.specials.eos.clone().unwrap_or_default(),
        };
        t.render(ctx).map_err(|e| format!("chat template ({}): {}", self.origin, describe(&e)))
    }
}

/// The template in a `tokenizer_config.json`'s `chat_template`: a string, or a list of
/// `{"name", "template"}` of which `name` (default: "default") is taken. `None` when the key
/// is absent.
pub fn from_tokenizer_config(config: &serde_json::Value, name: Option<&str>) -> Result<Option<String>, String> {
    let want = name.unwrap_or("default");
    match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => match name {
            Some(n) if n != "default" => Err(format!("chat_template is a single template; there is no {n:?}")),
            _ => Ok(Some(s.clone())),
        },
        Some(serde_json::Value::Array(list)) => {
            let mut names = Vec::new();
            for item in list {
                let (Some(n), Some(t)) =
                    (item.get("name").and_then(|n| n.as_str()), item.get("template").and_then(|t| t.as_str()))
                else {
                    return Err("chat_template: expected a list of {\"name\": ..., \"template\": ...}".into());
                };
                if n == want {
                    return Ok(Some(t.to_string()));
                }
                names.push(n.to_string());
            }
            Err(format!("chat_template has no template named {want:?} (it has {names:?})"))
        }
        Some(_) => Err("chat_template: expected a string or a list of named templates".into()),
    }
}

/// A special token's spelling in a `tokenizer_config.json`: a string, or `{"content": ...}`.
pub fn special_of(config: &serde_json::Value, key: &str) -> Option<String> {
    let v = config.get(key)?;
    v.as_str().or_else(|| v.get("content")?.as_str()).map(str::to_string)
}
