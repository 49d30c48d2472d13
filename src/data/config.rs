//! The `[data]` and `[tokenizer]` sections of a recipe, next to the preparation they
//! configure (the recipe aggregates them), with their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Synthetic,
    Text,
    Jsonl,
    /// Parquet files (Hugging Face datasets' format); `paths` may hold globs over shards.
    Parquet,
}

/// What a row holds (JSONL and Parquet sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Plain text under `field`; every token is trained on.
    Text,
    /// A list of `{role, content}` messages under `messages_field` (TRL's conversational
    /// format), rendered through the chat template.
    Chat,
    /// `prompt_field` and `completion_field`, both text or both message lists.
    PromptCompletion,
}

/// Which tokens of chat and prompt/completion rows carry the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// The assistant's turns (chat) or the completion (prompt/completion), end-of-turn included.
    Assistant,
    All,
}

/// What the synthetic generator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticFormat {
    Text,
    /// Its question/answer dialogues as messages rows (`data.format = "chat"`).
    Chat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    pub source: SourceKind,
    /// Input files for `text` (one document per blank-line-separated paragraph) and `jsonl`.
    pub paths: Vec<PathBuf>,
    /// What a JSONL or Parquet row holds (the synthetic source follows `synthetic_format`).
    pub format: DataFormat,
    /// Field (JSONL) or column (Parquet) holding the document text.
    pub field: String,
    /// Field holding the messages (`format = "chat"`).
    pub messages_field: String,
    /// Fields of `format = "prompt_completion"`.
    pub prompt_field: String,
    pub completion_field: String,
    /// A Jinja chat template file; overrides the teacher's (tokenizer_config.json or GGUF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<PathBuf>,
    /// Which of a `tokenizer_config.json`'s named templates to use (a list form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template_name: Option<String>,
    pub loss_on: LossOn,
    pub synthetic_format: SyntheticFormat,
    /// Number of documents the synthetic generator writes.
    pub synthetic_docs: usize,
    pub seq_len: usize,
    pub valid_fraction: f64,
    /// Fail on the first bad line instead of counting and skipping it.
    pub strict: bool,
    pub filter: FilterSection,
    /// `concat`: documents joined with EOS and cut into rows; `doc_per_row`: one document per
    /// row, padded (and masked); `documents`: joined, each attending to itself only.
    pub packing: Packing,
    /// Extra junk documents mixed into the training split (synthetic source), as a share of
    /// it: exact and near duplicates, repeated phrases, symbol noise, shouting, word salad.
    /// What the filters are for; the held-out split stays clean.
    pub synthetic_noise: f64,
    /// Prepare in bounded memory: two passes over the source (filter + tokenizer sample, then
    /// encode straight to disk); held-out documents by a seeded hash, not a permutation.
    pub streaming: bool,
    /// Megabytes of kept training text the tokenizer is trained on when streaming.
    pub tokenizer_sample_mb: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            source: SourceKind::Synthetic,
            paths: Vec::new(),
            format: DataFormat::Text,
            field: "text".into(),
            messages_field: "messages".into(),
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
            chat_template: None,
            chat_template_name: None,
            loss_on: LossOn::Assistant,
            synthetic_format: SyntheticFormat::Text,
            synthetic_docs: 4000,
            seq_len: 128,
            valid_fraction: 0.05,
            strict: false,
            filter: FilterSection::default(),
            packing: Packing::Concat,
            synthetic_noise: 0.0,
            streaming: false,
            tokenizer_sample_mb: 64,
        }
    }
}

impl DataSection {
    /// What the documents are: `format`, or for the synthetic source its `synthetic_format`;
    /// plain text files are text.
    pub fn row_format(&self) -> DataFormat {
        match self.source {
            SourceKind::Synthetic if self.synthetic_format == SyntheticFormat::Chat => DataFormat::Chat,
            SourceKind::Synthetic | SourceKind::Text => DataFormat::Text,
            SourceKind::Jsonl | SourceKind::Parquet => self.format,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// Documents joined end to end and cut into rows; a row attends across documents.
    Concat,
    /// One document per row, padded.
    DocPerRow,
    /// Joined and cut as `concat`, but each token attends only to its own document
    /// (block-diagonal causal attention), positions restart at each document, and no target
    /// crosses from one document into the next.
    Documents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    None,
    /// Identical up to case and whitespace (SHA-256 of the normalized text).
    Exact,
    /// Exact, then near-duplicates by MinHash-LSH at `minhash_threshold` Jaccard similarity.
    Minhash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSection {
    pub enabled: bool,
    pub min_chars: usize,
    pub max_chars: usize,
    /// Largest share of characters that are neither letters, digits, whitespace nor common
    /// punctuation; above it a document is mostly markup or noise.
    pub max_symbol_ratio: f64,
    /// Smallest share of letters among all characters (0 disables).
    pub min_alpha_ratio: f64,
    /// Largest share of upper-case letters among letters (1 disables).
    pub max_upper_ratio: f64,
    /// Largest share of word n-grams (n = `ngram_words`) that repeat an earlier one in the
    /// same document (1 disables): boilerplate, spam, generation loops.
    pub max_repeated_ngram_share: f64,
    pub ngram_words: usize,
    pub dedup: Dedup,
    /// Jaccard similarity of word-n-gram sets at which two documents are near-duplicates.
    pub minhash_threshold: f64,
    /// MinHash permutations, split into `minhash_bands` LSH bands.
    pub minhash_perms: usize,
    pub minhash_bands: usize,
    /// Keep training documents whose teacher perplexity lies in [min, max] (the
    /// "textbook-like" band); needs a loaded teacher (`teacher.kind = "hf"` or `"checkpoint"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_ppl_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_ppl_max: Option<f64>,
}

impl Default for FilterSection {
    fn default() -> Self {
        FilterSection {
            enabled: true,
            min_chars: 32,
            max_chars: 100_000,
            max_symbol_ratio: 0.2,
            min_alpha_ratio: 0.5,
            max_upper_ratio: 0.3,
            max_repeated_ngram_share: 0.3,
            ngram_words: 3,
            dedup: Dedup::Exact,
            minhash_threshold: 0.8,
            minhash_perms: 128,
            minhash_bands: 16,
            teacher_ppl_min: None,
            teacher_ppl_max: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Train a byte-level BPE on the prepared training split.
    Train,
    /// Load an existing `tokenizer.json`.
    File,
    /// Use the teacher's `tokenizer.json` (`teacher.kind = "hf"` or `"checkpoint"`).
    Teacher,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerSection {
    pub kind: TokenizerKind,
    pub vocab_size: usize,
    pub min_frequency: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Extra special tokens a trained tokenizer keeps whole (a chat template's `<|im_start|>`,
    /// `<|im_end|>`, ...), after EOS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub special_tokens: Vec<String>,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        TokenizerSection {
            kind: TokenizerKind::Train,
            vocab_size: 1024,
            min_frequency: 2,
            path: None,
            special_tokens: Vec::new(),
        }
    }
}
