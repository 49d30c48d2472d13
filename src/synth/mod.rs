//! Teacher-made data (sequence-level KD, Kim & Rush 2016; the phi and Cosmopedia recipes):
//! the teacher writes a response to each prompt of a dataset, `samples_per_prompt` times, and
//! the result is a dataset a student trains on as on any other.
//!
//! Prompts are the user turns of chat rows (the conversation through its first user message),
//! the prompts of prompt/completion rows, or the first `prefix_tokens` tokens of text documents.
//! Rows come out as JSON Lines in shards of `shard_rows`: a conversation (`messages`, the
//! teacher's answer last) or a `prompt`/`completion` pair for text, each with its provenance
//! (teacher, seed, settings, row index, why it stopped). Row `g` (prompt `g /
//! samples_per_prompt`) draws from a generator of its own (the seed and `g`), and a shard's
//! batches never reach into another shard, so a killed job resumes at its first missing shard
//! and writes the bytes it would have written.

pub mod shards;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::data::chat::Message;

/// `[synth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthSection {
    /// Responses written per prompt.
    pub samples_per_prompt: usize,
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus cut (1 = none).
    pub top_p: f64,
    /// Most likely tokens kept (0 = all).
    pub top_k: usize,
    /// Rows generated together.
    pub batch_size: usize,
    /// Rows per output shard.
    pub shard_rows: usize,
    /// Text documents: the prompt is each document's first `prefix_tokens` tokens.
    pub prefix_tokens: usize,
    /// Use at most this many prompts (unset: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prompts: Option<usize>,
    /// The output folder (unset: `<run>/synth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<std::path::PathBuf>,
}

impl Default for SynthSection {
    fn default() -> Self {
        SynthSection {
            samples_per_prompt: 1,
            max_new_tokens: 256,
            temperature: 0.7,
            top_p: 0.95,
            top_k: 0,
            batch_size: 32,
            shard_rows: 1024,
            prefix_tokens: 32,
            max_prompts: None,
            out: None,
        }
    }
}

/// `[synth]` at its defaults.
pub fn untouched(s: &SynthSection) -> bool {
    *s == SynthSection::default()
}

impl SynthSection {
    /// The ranges, as (key, what was expected).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("samples_per_prompt", self.samples_per_prompt),
            ("max_new_tokens", self.max_new_tokens),
            ("batch_size", self.batch_size),
            ("shard_rows", self.shard_rows),
            ("prefix_tokens", self.prefix_tokens),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((k, "expected at least 1".into()));
        }
        if self.samples_per_prompt > 1024 {
            return Err(("samples_per_prompt", format!("expected at most 1024, got {}", self.samples_per_prompt)));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err((
                "temperature",
                format!("expected a finite temperature >= 0 (0 = greedy), got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", format!("expected a value in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }

    pub fn sampling(&self, seed: u64) -> crate::generate::Sampling {
        crate::generate::Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
            max_tokens: self.max_new_tokens,
        }
    }
}

/// One prompt: a conversation to answer as the assistant, or a text to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SynthPrompt {
    Chat { messages: Vec<Message> },
    Text { text: String },
}

/// A chat row's prompt: its messages through the first user message (system turns before it
/// kept). `Err` when there is none.
pub fn chat_prompt(messages: &[Message]) -> Result<Vec<Message>, String> {
    let first_user = messages.iter().position(|m| m.role == "user").ok_or("the conversation has no user message")?;
    Ok(messages[..=first_user].to_vec())
}

/// One output row: the conversation with the teacher's answer last, or the text prompt and its
/// completion; with its provenance.
pub fn output_row(prompt: &SynthPrompt, completion: &str, provenance: serde_json::Value) -> serde_json::Value {
    match prompt {
        SynthPrompt::Chat { messages } => {
            let mut all = serde_json::to_value(messages).expect("messages serialize");
            all.as_array_mut().expect("a list").push(serde_json::json!({"role": "assistant", "content": completion}));
            serde_json::json!({"messages": all, "provenance": provenance})
        }
        SynthPrompt::Text { text } => {
            serde_json::json!({"prompt": text, "completion": completion, "provenance": provenance})
        }
    }
}
