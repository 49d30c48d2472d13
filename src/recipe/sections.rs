//! Every section of a recipe as plain serde data, each with its defaults next to it: a
//! section left out of the file, or a key left out of a section, takes the value below.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PartialShape;
pub use crate::curriculum::{CurriculumSection, DifficultyScore, RowOrder, Schedule};
pub use crate::device::Backend;
use crate::export::ExportFormat;
use crate::kd_loss::Divergence;
use crate::teacher::codec::{TailMode, ValueCodec};
pub use crate::train::config::{CheckpointSection, EvalSection, OptimSection};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub name: String,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_out_dir")]
    pub out_dir: PathBuf,
    #[serde(default = "d_backend")]
    pub backend: Backend,
}

// Per-field defaults here because `name` has none.
fn d_seed() -> u64 {
    42
}
fn d_out_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn d_backend() -> Backend {
    Backend::Cpu
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Synthetic,
    Text,
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    pub source: SourceKind,
    /// Input files for `text` (one document per blank-line-separated paragraph) and `jsonl`.
    pub paths: Vec<PathBuf>,
    /// JSONL field holding the document text.
    pub field: String,
    /// Number of documents the synthetic generator writes.
    pub synthetic_docs: usize,
    pub seq_len: usize,
    pub valid_fraction: f64,
    /// Fail on the first bad line instead of counting and skipping it.
    pub strict: bool,
    pub filter: FilterSection,
    /// `concat`: documents joined with EOS and cut into rows; `doc_per_row`: one document per
    /// row, padded (and masked).
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
            field: "text".into(),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    Concat,
    DocPerRow,
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
}

impl Default for TokenizerSection {
    fn default() -> Self {
        TokenizerSection { kind: TokenizerKind::Train, vocab_size: 1024, min_frequency: 2, path: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherKind {
    /// Pretrain a teacher from `model` on the prepared data, then freeze it.
    Pretrain,
    /// Load a frozen teacher exported by an earlier run (`<run>/teacher/final`).
    Checkpoint,
    /// A Hugging Face Llama or Qwen2 folder: config.json, safetensors, tokenizer.json.
    Hf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogitsSource {
    /// Teacher forward pass per batch, no autodiff graph.
    Online,
    /// Top-k logits precomputed by `distill cache-teacher` (built by `run` if missing).
    Cache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherDtype {
    F32,
    Bf16,
    F16,
}

impl TeacherDtype {
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            TeacherDtype::F32 => burn::tensor::DType::F32,
            TeacherDtype::Bf16 => burn::tensor::DType::BF16,
            TeacherDtype::F16 => burn::tensor::DType::F16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Logits kept per token.
    pub k: usize,
    pub values: ValueCodec,
    pub tail: TailMode,
    /// Cache directory (default `<run>/teacher_cache`); share one between student runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub rows_per_shard: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection { k: 32, values: ValueCodec::Q8, tail: TailMode::Other, path: None, rows_per_shard: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherSection {
    pub kind: TeacherKind,
    /// A model-shape file (`configs/teacher-*.toml`); keys under `[teacher.model]` override it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    pub model: PartialShape,
    /// Directory of a frozen teacher (`kind = "checkpoint"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub logits: LogitsSource,
    /// Precision of the frozen teacher's weights and activations: f32, bf16 or f16.
    pub dtype: TeacherDtype,
    /// Optimizer and length of the teacher's pretraining (`kind = "pretrain"`).
    pub optim: OptimSection,
}

impl Default for TeacherSection {
    fn default() -> Self {
        TeacherSection {
            kind: TeacherKind::Pretrain,
            config: None,
            model: PartialShape::default(),
            path: None,
            logits: LogitsSource::Online,
            dtype: TeacherDtype::F32,
            optim: OptimSection { lr: 2e-3, ..OptimSection::default() },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    pub model: PartialShape,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillSection {
    /// Weight of the hard-label cross-entropy; `1 - alpha` goes to the KL term.
    pub alpha: f64,
    /// Softmax temperature tau of the KL term (the KL is scaled by tau^2).
    pub temperature: f64,
    /// forward_kl | reverse_kl | jsd | skew_forward_kl | skew_reverse_kl | tv
    pub divergence: DivergenceKind,
    /// JSD mixture weight of the teacher (0 = forward KL, 1 = reverse KL).
    pub jsd_beta: f64,
    /// Skew KL mixture weight (0 = the plain KL).
    pub skew_lambda: f64,
    /// Rows (tokens) per chunk of the loss: at most one chunk of [tokens, vocab] probabilities
    /// exists at a time.
    pub chunk_tokens: usize,
    /// If set, alpha moves linearly from `alpha` to `alpha_end` over training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_end: Option<f64>,
    /// If set, tau moves linearly from `temperature` to `temperature_end` over training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_end: Option<f64>,
}

impl Default for DistillSection {
    fn default() -> Self {
        DistillSection {
            alpha: 0.5,
            temperature: 1.0,
            divergence: DivergenceKind::ForwardKl,
            jsd_beta: 0.5,
            skew_lambda: 0.1,
            chunk_tokens: 1024,
            alpha_end: None,
            temperature_end: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceKind {
    ForwardKl,
    ReverseKl,
    Jsd,
    SkewForwardKl,
    SkewReverseKl,
    Tv,
}

impl DistillSection {
    pub fn divergence(&self) -> Divergence {
        match self.divergence {
            DivergenceKind::ForwardKl => Divergence::ForwardKl,
            DivergenceKind::ReverseKl => Divergence::ReverseKl,
            DivergenceKind::Jsd => Divergence::Jsd { beta: self.jsd_beta },
            DivergenceKind::SkewForwardKl => Divergence::SkewForwardKl { lambda: self.skew_lambda },
            DivergenceKind::SkewReverseKl => Divergence::SkewReverseKl { lambda: self.skew_lambda },
            DivergenceKind::Tv => Divergence::Tv,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSection {
    pub formats: Vec<ExportFormat>,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection { formats: vec![ExportFormat::Int8] }
    }
}
