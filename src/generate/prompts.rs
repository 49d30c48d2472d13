//! A batch of prompts from a file's text: JSON Lines (a JSON string, or an object with a
//! `prompt` string or a `messages` list per line) or plain text (one prompt per line).

use crate::data::chat::{ChatTemplate, Message, messages};

/// One prompt as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSpec {
    Text(String),
    /// A conversation to continue as the assistant (rendered with the generation prompt).
    Messages(Vec<Message>),
}

/// The prompts of `text` (the file `name`); `jsonl` picks the format. Errors name the line.
pub fn parse(text: &str, name: &str, jsonl: bool) -> Result<Vec<PromptSpec>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{name}:{}", i + 1);
        if !jsonl {
            out.push(PromptSpec::Text(line.to_string()));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: invalid JSON: {e}", at()))?;
        out.push(match &v {
            serde_json::Value::String(s) => PromptSpec::Text(s.clone()),
            serde_json::Value::Object(o) => match (o.get("prompt"), o.get("messages")) {
                (Some(serde_json::Value::String(s)), None) => PromptSpec::Text(s.clone()),
                (None, Some(m)) => PromptSpec::Messages(messages(m, "messages").map_err(|e| format!("{}: {e}", at()))?),
                _ => return Err(format!("{}: expected a `prompt` string or a `messages` list (one of them)", at())),
            },
            _ => return Err(format!("{}: expected a JSON string or an object", at())),
        });
    }
    Ok(out)
}

/// The text a model continues for `p`: a plain prompt as it is (the tokenizer adds BOS), a
/// conversation through `template` with the generation prompt (the template prints BOS).
/// `Ok((text, templated))`.
pub fn render(p: &PromptSpec, template: Option<&ChatTemplate>) -> Result<(String, bool), String> {
    match p {
        PromptSpec::Text(t) => Ok((t.clone(), false)),
        PromptSpec::Messages(m) => {
            let t = template.ok_or("a `messages` prompt needs a chat template, and the run has none")?;
            Ok((t.render(m, true)?, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lines_parse_or_name_their_line() {
        let ok = "\"a\"\n\n{\"prompt\": \"b\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"c\"}]}\n";
        let p = parse(ok, "p.jsonl", true).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], PromptSpec::Text("b".into()));
        assert!(matches!(&p[2], PromptSpec::Messages(m) if m[0].content == "c"));
        assert_eq!(parse("x\n\ny", "p.txt", false).unwrap().len(), 3);
        for (bad, want) in [
            ("\"a\"\n{", "p.jsonl:2: invalid JSON"),
            ("{\"prompt\": 3}", "p.jsonl:1: expected a `prompt` string"),
            ("{\"messages\": []}", "p.jsonl:1: `messages` is an empty list"),
            ("[1]", "p.jsonl:1: expected a JSON string or an object"),
        ] {
            let e = parse(bad, "p.jsonl", true).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
