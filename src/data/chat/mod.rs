//! Instruction and chat data: rows in TRL's conversational format (`{"messages": [...]}`) or
//! prompt/completion (`{"prompt": ..., "completion": ...}`, plain text or messages), rendered
//! to text through the model's chat template, with the spans that carry the loss.
//!
//! A rendered document travels through preparation (filters, dedup, the tokenizer sample) as
//! one string in which the loss spans are marked by two private-use characters, [`START`] and
//! [`END`]; the encoder removes them and marks the tokens whose text overlaps a span
//! ([`Tokenizer::encode_marked`](super::tokenizer::Tokenizer::encode_marked)). So the two
//! preparation drivers and the filters need no second channel, and a span is located from the
//! rendered text's offsets, never by guessing token ids. Rows whose text contains either
//! character are refused.
//!
//! The assistant spans come from the template itself: for an assistant message `i`, the text
//! that rendering `messages[..=i]` adds to rendering `messages[..i]` with the generation prompt
//! is the assistant's turn (its content and its end-of-turn tokens). A template that rewrites
//! earlier turns (no prefix of its own later output) cannot be masked this way, and its rows
//! are refused, naming the message.

pub mod template;
#[cfg(test)]
mod tests;

use std::ops::Range;

use serde_json::Value;

use super::config::{DataFormat, DataSection, LossOn};
pub use template::{ChatTemplate, Message, Specials};

/// Opens a loss span in a marked document.
pub const START: char = '\u{E000}';
/// Closes a loss span.
pub const END: char = '\u{E001}';

/// How rows become documents: the format, its field names, the template and the loss policy.
pub struct Renderer<'a> {
    pub data: &'a DataSection,
    pub template: Option<&'a ChatTemplate>,
    /// Put before a plain prompt: the BOS spelling when the tokenizer adds one.
    pub plain_bos: Option<String>,
    /// Ends a plain completion: the EOS spelling.
    pub plain_eos: String,
}

/// What one row holds once parsed.
enum Turns {
    Text(String),
    Messages(Vec<Message>),
}

pub fn messages(v: &Value, field: &str) -> Result<Vec<Message>, String> {
    let list = v.as_array().ok_or_else(|| format!("`{field}` is not a list of messages"))?;
    if list.is_empty() {
        return Err(format!("`{field}` is an empty list"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let mut obj = m.as_object().cloned().ok_or_else(|| format!("`{field}`[{i}] is not an object"))?;
            let role = match obj.remove("role") {
                Some(Value::String(r)) if !r.is_empty() => r,
                _ => return Err(format!("`{field}`[{i}] has no string `role`")),
            };
            let content = match obj.remove("content") {
                Some(Value::String(c)) => c,
                _ => return Err(format!("`{field}`[{i}] ({role}) has no string `content`")),
            };
            Ok(Message { role, content, extra: obj })
        })
        .collect()
}

fn turns(v: &Value, field: &str) -> Result<Turns, String> {
    match v {
        Value::String(s) => Ok(Turns::Text(s.clone())),
        Value::Array(_) => Ok(Turns::Messages(messages(v, field)?)),
        _ => Err(format!("`{field}` is neither a string nor a list of messages")),
    }
}

fn field<'v>(row: &'v Value, name: &str) -> Result<&'v Value, String> {
    row.get(name).ok_or_else(|| format!("no field `{name}`"))
}

/// `text` with `spans` (byte ranges, ascending, disjoint) marked.
fn mark(text: &str, spans: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len() + 6 * spans.len());
    let mut at = 0;
    for s in spans {
        out.push_str(&text[at..s.start]);
        out.push(START);
        out.push_str(&text[s.clone()]);
        out.push(END);
        at = s.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The marked text and the spans of a marked document: the text without markers and the byte
/// ranges between each START and its END.
pub fn unmark(marked: &str) -> (String, Vec<Range<usize>>) {
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut open = None;
    for c in marked.chars() {
        match c {
            START => open = Some(text.len()),
            END => {
                if let Some(s) = open.take() {
                    spans.push(s..text.len());
                }
            }
            _ => text.push(c),
        }
    }
    (text, spans)
}

/// Which tokens carry the loss: those whose byte range `offsets[i]` overlaps a span (an empty
/// range counts where it starts), as transformers' assistant mask marks every token holding a
/// character of the span.
pub fn token_mask(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    offsets
        .iter()
        .map(|&(a, b)| {
            spans.iter().any(|s| if a == b { s.contains(&a) } else { a < s.end && b > s.start && s.start < s.end })
        })
        .collect()
}

impl Renderer<'_> {
    fn template(&self) -> Result<&ChatTemplate, String> {
        self.template.ok_or_else(|| "messages need a chat template (data.chat_template)".to_string())
    }

    /// The rendered text of `msgs` and the byte spans of its assistant turns.
    fn conversation(&self, msgs: &[Message]) -> Result<(String, Vec<Range<usize>>), String> {
        let t = self.template()?;
        let full = t.render(msgs, false)?;
        let mut spans = Vec::new();
        for (i, m) in msgs.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let before = t.render(&msgs[..i], true)?;
            let through = t.render(&msgs[..=i], false)?;
            if !through.starts_with(&before) || !full.starts_with(&through) {
                return Err(format!(
                    "the chat template ({}) does not render message {i} ({}) as an extension of the messages before it, so its assistant span cannot be located; set data.loss_on = \"all\"",
                    t.origin(),
                    m.role
                ));
            }
            spans.push(before.len()..through.len());
        }
        Ok((full, spans))
    }

    /// One row as a marked document, or why it is malformed.
    pub fn document(&self, row: &Value) -> Result<String, String> {
        let d = self.data;
        let (text, spans) = match d.row_format() {
            DataFormat::Text => {
                let t = row.get(&d.field).and_then(|t| t.as_str());
                return t.map(str::to_string).ok_or_else(|| format!("no string field `{}`", d.field));
            }
            DataFormat::Chat => {
                let msgs = messages(field(row, &d.messages_field)?, &d.messages_field)?;
                self.conversation(&msgs)?
            }
            DataFormat::PromptCompletion => {
                let p = turns(field(row, &d.prompt_field)?, &d.prompt_field)?;
                let c = turns(field(row, &d.completion_field)?, &d.completion_field)?;
                match (p, c) {
                    (Turns::Text(p), Turns::Text(c)) => {
                        let bos = self.plain_bos.as_deref().unwrap_or("");
                        let start = bos.len() + p.len();
                        let text = format!("{bos}{p}{c}{}", self.plain_eos);
                        let end = text.len();
                        (text, vec![start..end])
                    }
                    (Turns::Messages(p), Turns::Messages(c)) => {
                        let t = self.template()?;
                        let all: Vec<Message> = p.iter().chain(&c).cloned().collect();
                        let before = t.render(&p, true)?;
                        let full = t.render(&all, false)?;
                        if !full.starts_with(&before) {
                            return Err(format!(
                                "the chat template ({}) does not render the completion as an extension of the prompt",
                                t.origin()
                            ));
                        }
                        let end = full.len();
                        (full, vec![before.len()..end])
                    }
                    _ => return Err("prompt and completion must both be text or both be messages".into()),
                }
            }
        };
        if text.contains([START, END]) {
            return Err("the text contains U+E000 or U+E001, which distill reserves to mark loss spans".into());
        }
        match d.loss_on {
            LossOn::All => Ok(mark(&text, &[0..text.len()])),
            LossOn::Assistant if spans.iter().all(|s| s.is_empty()) => {
                Err("nothing to train on: no assistant or completion text (data.loss_on = \"assistant\")".into())
            }
            LossOn::Assistant => Ok(mark(&text, &spans)),
        }
    }
}
