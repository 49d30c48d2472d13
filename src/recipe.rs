//! The recipe: a TOML file parsed into plain serde data, with `--set` overrides, model shapes
//! pulled in from `configs/`, and one validation pass. Everything downstream trusts a `Recipe`.
//!
//! Errors always say which file, which key, where (line:column) and what was expected, because
//! a recipe error is the most common thing a user will ever see from us.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::config::default_layer_pattern;

// These types live with the code they configure; the recipe only names them. Re-exported
// because files outside this refactor still import them from here.
pub use crate::kd_loss::Divergence;
pub use crate::model::config::{MambaShape, ModelShape, RopeScaling};
pub use crate::teacher::codec::{TailMode, ValueCodec};
pub use crate::train::decay::NoDecay;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub run: RunSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub tokenizer: TokenizerSection,
    pub teacher: TeacherSection,
    pub student: StudentSection,
    #[serde(default)]
    pub distill: DistillSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub curriculum: CurriculumSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
    Wgpu,
}

impl Backend {
    /// Whether this binary was built with the cargo feature the backend needs.
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Synthetic,
    Text,
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    #[serde(default = "d_source")]
    pub source: SourceKind,
    /// Input files for `text` (one document per blank-line-separated paragraph) and `jsonl`.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// JSONL field holding the document text.
    #[serde(default = "d_field")]
    pub field: String,
    /// Number of documents the synthetic generator writes.
    #[serde(default = "d_synthetic_docs")]
    pub synthetic_docs: usize,
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    #[serde(default = "d_valid_fraction")]
    pub valid_fraction: f64,
    /// Fail on the first bad line instead of counting and skipping it.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub filter: FilterSection,
    /// `concat`: documents joined with EOS and cut into rows; `doc_per_row`: one document per
    /// row, padded (and masked).
    #[serde(default = "d_packing")]
    pub packing: Packing,
    /// Extra junk documents mixed into the training split (synthetic source), as a share of
    /// it: exact and near duplicates, repeated phrases, symbol noise, shouting, word salad.
    /// What the filters are for; the held-out split stays clean.
    #[serde(default)]
    pub synthetic_noise: f64,
    /// Prepare in bounded memory: two passes over the source (filter + tokenizer sample, then
    /// encode straight to disk); held-out documents by a seeded hash, not a permutation.
    #[serde(default)]
    pub streaming: bool,
    /// Megabytes of kept training text the tokenizer is trained on when streaming.
    #[serde(default = "d_tok_sample")]
    pub tokenizer_sample_mb: usize,
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
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_min_chars")]
    pub min_chars: usize,
    #[serde(default = "d_max_chars")]
    pub max_chars: usize,
    /// Largest share of characters that are neither letters, digits, whitespace nor common
    /// punctuation; above it a document is mostly markup or noise.
    #[serde(default = "d_max_symbol_ratio")]
    pub max_symbol_ratio: f64,
    /// Smallest share of letters among all characters (0 disables).
    #[serde(default = "d_min_alpha")]
    pub min_alpha_ratio: f64,
    /// Largest share of upper-case letters among letters (1 disables).
    #[serde(default = "d_max_upper")]
    pub max_upper_ratio: f64,
    /// Largest share of word n-grams (n = `ngram_words`) that repeat an earlier one in the
    /// same document (1 disables): boilerplate, spam, generation loops.
    #[serde(default = "d_max_repeat")]
    pub max_repeated_ngram_share: f64,
    #[serde(default = "d_ngram_words")]
    pub ngram_words: usize,
    #[serde(default = "d_dedup")]
    pub dedup: Dedup,
    /// Jaccard similarity of word-n-gram sets at which two documents are near-duplicates.
    #[serde(default = "d_minhash_threshold")]
    pub minhash_threshold: f64,
    /// MinHash permutations, split into `minhash_bands` LSH bands.
    #[serde(default = "d_minhash_perms")]
    pub minhash_perms: usize,
    #[serde(default = "d_minhash_bands")]
    pub minhash_bands: usize,
    /// Keep training documents whose teacher perplexity lies in [min, max] (the
    /// "textbook-like" band); needs a loaded teacher (`teacher.kind = "hf"` or `"checkpoint"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_ppl_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_ppl_max: Option<f64>,
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
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    #[serde(default = "d_tok_kind")]
    pub kind: TokenizerKind,
    #[serde(default = "d_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d_min_frequency")]
    pub min_frequency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// A model shape, as written in a recipe or a `configs/*.toml` file: every key optional so that
/// inline keys can override a shared config file. `resolve` turns it into a [`ModelShape`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_ff: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_embeddings: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mamba: Option<MambaShape>,
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
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Logits kept per token.
    #[serde(default = "d_cache_k")]
    pub k: usize,
    #[serde(default = "d_codec")]
    pub values: ValueCodec,
    #[serde(default = "d_tail")]
    pub tail: TailMode,
    /// Cache directory (default `<run>/teacher_cache`); share one between student runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default = "d_rows_per_shard")]
    pub rows_per_shard: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSection {
    #[serde(default = "d_teacher_kind")]
    pub kind: TeacherKind,
    /// A model-shape file (`configs/teacher-*.toml`); keys under `[teacher.model]` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub model: PartialShape,
    /// Directory of a frozen teacher (`kind = "checkpoint"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default = "d_logits")]
    pub logits: LogitsSource,
    /// Precision of the frozen teacher's weights and activations: f32, bf16 or f16.
    #[serde(default = "d_teacher_dtype")]
    pub dtype: TeacherDtype,
    /// Optimizer and length of the teacher's pretraining (`kind = "pretrain"`).
    #[serde(default = "d_teacher_optim")]
    pub optim: OptimSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub model: PartialShape,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// Weight of the hard-label cross-entropy; `1 - alpha` goes to the KL term.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Softmax temperature tau of the KL term (the KL is scaled by tau^2).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// forward_kl | reverse_kl | jsd | skew_forward_kl | skew_reverse_kl | tv
    #[serde(default = "d_divergence")]
    pub divergence: DivergenceKind,
    /// JSD mixture weight of the teacher (0 = forward KL, 1 = reverse KL).
    #[serde(default = "d_half")]
    pub jsd_beta: f64,
    /// Skew KL mixture weight (0 = the plain KL).
    #[serde(default = "d_skew")]
    pub skew_lambda: f64,
    /// Rows (tokens) per chunk of the loss: at most one chunk of [tokens, vocab] probabilities
    /// exists at a time.
    #[serde(default = "d_chunk_tokens")]
    pub chunk_tokens: usize,
    /// If set, alpha moves linearly from `alpha` to `alpha_end` over training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_end: Option<f64>,
    /// If set, tau moves linearly from `temperature` to `temperature_end` over training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_end: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    None,
    Linear,
    Root,
    Step,
    SelfPaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifficultyScore {
    /// Mean teacher cross-entropy of the row's tokens.
    TeacherCe,
    /// Mean entropy of the teacher's next-token distribution.
    TeacherEntropy,
    /// Token-weighted mean length of the documents in the row.
    Length,
    /// Share of the row's token trigrams seen earlier in the row (the repetition filter's score).
    Repetition,
}

impl DifficultyScore {
    /// Whether the score is computed from the teacher's distribution.
    pub fn needs_teacher(self) -> bool {
        matches!(self, DifficultyScore::TeacherCe | DifficultyScore::TeacherEntropy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// A seeded permutation per epoch.
    Random,
    /// The first epoch from easiest to hardest by the difficulty score, then random.
    EasyToHard,
}

/// Curriculum sample weighting (see src/curriculum.rs and the README for the formulas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumSection {
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    #[serde(default = "d_score")]
    pub score: DifficultyScore,
    /// Competence c0 at the start: the share of the data at full weight.
    #[serde(default = "d_c0")]
    pub start: f64,
    /// Fraction of training over which competence grows to 1.
    #[serde(default = "d_ramp")]
    pub ramp: f64,
    /// Stages of the `step` schedule.
    #[serde(default = "d_stages")]
    pub stages: usize,
    /// Weight of the rows beyond the current competence.
    #[serde(default = "d_min_weight")]
    pub min_weight: f64,
    #[serde(default = "d_order")]
    pub order: RowOrder,
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
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_min_lr")]
    pub min_lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    #[serde(default = "d_weight_decay")]
    pub weight_decay: f64,
    /// Parameter groups that weight decay leaves alone (the matrices are always decayed).
    #[serde(default = "d_no_decay")]
    pub no_decay: Vec<NoDecay>,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables it.
    #[serde(default = "d_grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_grad_accum")]
    pub grad_accum: usize,
    /// Optimizer steps (each of `batch_size * grad_accum` sequences).
    #[serde(default = "d_steps")]
    pub steps: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    #[serde(default = "d_ckpt_every")]
    pub every_steps: usize,
    #[serde(default = "d_keep_last")]
    pub keep_last: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    #[serde(default = "d_eval_every")]
    pub every_steps: usize,
    /// Held-out batches per periodic evaluation (the final evaluation uses the whole split).
    #[serde(default = "d_eval_batches")]
    pub batches: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Symmetric per-output-channel int8 weights + f32 scales, in safetensors.
    Int8,
    /// Plain f32 safetensors.
    F32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    #[serde(default = "d_formats")]
    pub formats: Vec<ExportFormat>,
}

fn d_seed() -> u64 { 42 }
fn d_out_dir() -> PathBuf { PathBuf::from("runs") }
fn d_backend() -> Backend { Backend::Cpu }
fn d_source() -> SourceKind { SourceKind::Synthetic }
fn d_field() -> String { "text".into() }
fn d_synthetic_docs() -> usize { 4000 }
fn d_seq_len() -> usize { 128 }
fn d_valid_fraction() -> f64 { 0.05 }
fn d_true() -> bool { true }
fn d_min_chars() -> usize { 32 }
fn d_max_chars() -> usize { 100_000 }
fn d_max_symbol_ratio() -> f64 { 0.2 }
fn d_dedup() -> Dedup { Dedup::Exact }
fn d_packing() -> Packing { Packing::Concat }
fn d_chunk_tokens() -> usize { 1024 }
fn d_tok_sample() -> usize { 64 }
fn d_min_alpha() -> f64 { 0.5 }
fn d_max_upper() -> f64 { 0.3 }
fn d_max_repeat() -> f64 { 0.3 }
fn d_ngram_words() -> usize { 3 }
fn d_minhash_threshold() -> f64 { 0.8 }
fn d_minhash_perms() -> usize { 128 }
fn d_minhash_bands() -> usize { 16 }
fn d_tok_kind() -> TokenizerKind { TokenizerKind::Train }
fn d_vocab_size() -> usize { 1024 }
fn d_min_frequency() -> u64 { 2 }
fn d_teacher_kind() -> TeacherKind { TeacherKind::Pretrain }
fn d_logits() -> LogitsSource { LogitsSource::Online }
fn d_teacher_optim() -> OptimSection { OptimSection { lr: 2e-3, ..OptimSection::default() } }
fn d_alpha() -> f64 { 0.5 }
fn d_temperature() -> f64 { 1.0 }
fn d_divergence() -> DivergenceKind { DivergenceKind::ForwardKl }
fn d_half() -> f64 { 0.5 }
fn d_skew() -> f64 { 0.1 }
fn d_lr() -> f64 { 2e-3 }
fn d_min_lr() -> f64 { 2e-4 }
fn d_warmup() -> usize { 20 }
fn d_weight_decay() -> f64 { 0.01 }
fn d_no_decay() -> Vec<NoDecay> { vec![NoDecay::Norm, NoDecay::Bias, NoDecay::Embedding, NoDecay::Ssm] }
fn d_beta1() -> f64 { 0.9 }
fn d_beta2() -> f64 { 0.95 }
fn d_eps() -> f64 { 1e-8 }
fn d_grad_clip() -> f64 { 1.0 }
fn d_batch_size() -> usize { 16 }
fn d_grad_accum() -> usize { 1 }
fn d_steps() -> usize { 300 }
fn d_ckpt_every() -> usize { 50 }
fn d_keep_last() -> usize { 2 }
fn d_eval_every() -> usize { 50 }
fn d_eval_batches() -> usize { 8 }
fn d_schedule() -> Schedule { Schedule::None }
fn d_score() -> DifficultyScore { DifficultyScore::TeacherCe }
fn d_c0() -> f64 { 0.2 }
fn d_ramp() -> f64 { 0.5 }
fn d_stages() -> usize { 4 }
fn d_min_weight() -> f64 { 0.1 }
fn d_order() -> RowOrder { RowOrder::Random }
fn d_teacher_dtype() -> TeacherDtype { TeacherDtype::F32 }
fn d_cache_k() -> usize { 32 }
fn d_codec() -> ValueCodec { ValueCodec::Q8 }
fn d_tail() -> TailMode { TailMode::Other }
fn d_rows_per_shard() -> usize { 1024 }
fn d_formats() -> Vec<ExportFormat> { vec![ExportFormat::Int8] }

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field of this section has a default")
            }
        }
    )*};
}
default_from_serde!(DataSection, FilterSection, TokenizerSection, DistillSection, OptimSection,
    CheckpointSection, EvalSection, ExportSection, CacheSection, CurriculumSection);

impl PartialShape {
    /// Keys set here win over `base`.
    fn over(&self, base: &PartialShape) -> PartialShape {
        PartialShape {
            d_model: self.d_model.or(base.d_model),
            n_layers: self.n_layers.or(base.n_layers),
            n_heads: self.n_heads.or(base.n_heads),
            n_kv_heads: self.n_kv_heads.or(base.n_kv_heads),
            d_ff: self.d_ff.or(base.d_ff),
            max_seq_len: self.max_seq_len.or(base.max_seq_len),
            rope_theta: self.rope_theta.or(base.rope_theta),
            tie_embeddings: self.tie_embeddings.or(base.tie_embeddings),
            norm_eps: self.norm_eps.or(base.norm_eps),
            layer_pattern: self.layer_pattern.clone().or_else(|| base.layer_pattern.clone()),
            window: self.window.or(base.window),
            qkv_bias: self.qkv_bias.or(base.qkv_bias),
            rope_scaling: self.rope_scaling.clone().or_else(|| base.rope_scaling.clone()),
            mamba: self.mamba.clone().or_else(|| base.mamba.clone()),
        }
    }

    /// Missing optional keys take defaults; a missing required key is `Err(key name)`.
    pub fn to_shape(&self) -> std::result::Result<ModelShape, &'static str> {
        Ok(ModelShape {
            d_model: self.d_model.ok_or("d_model")?,
            n_layers: self.n_layers.ok_or("n_layers")?,
            n_heads: self.n_heads.ok_or("n_heads")?,
            n_kv_heads: self.n_kv_heads.or(self.n_heads).ok_or("n_kv_heads")?,
            d_ff: self.d_ff.ok_or("d_ff")?,
            max_seq_len: self.max_seq_len.unwrap_or(512),
            rope_theta: self.rope_theta.unwrap_or(10_000.0),
            tie_embeddings: self.tie_embeddings.unwrap_or(false),
            norm_eps: self.norm_eps.unwrap_or(1e-5),
            layer_pattern: self.layer_pattern.clone().unwrap_or_else(default_layer_pattern),
            window: self.window,
            qkv_bias: self.qkv_bias.unwrap_or(false),
            o_bias: false,
            window_from_layer: 0,
            rope_scaling: self.rope_scaling.clone(),
            mamba: self.mamba.clone().unwrap_or_default(),
        })
    }

    fn from_shape(s: &ModelShape) -> PartialShape {
        PartialShape {
            d_model: Some(s.d_model),
            n_layers: Some(s.n_layers),
            n_heads: Some(s.n_heads),
            n_kv_heads: Some(s.n_kv_heads),
            d_ff: Some(s.d_ff),
            max_seq_len: Some(s.max_seq_len),
            rope_theta: Some(s.rope_theta),
            tie_embeddings: Some(s.tie_embeddings),
            norm_eps: Some(s.norm_eps),
            layer_pattern: Some(s.layer_pattern.clone()),
            window: s.window,
            qkv_bias: Some(s.qkv_bias),
            rope_scaling: s.rope_scaling.clone(),
            mamba: Some(s.mamba.clone()),
        }
    }
}

impl TeacherSection {
    /// The resolved shape (only valid after [`Recipe::load`]).
    pub fn shape(&self) -> ModelShape {
        self.model.to_shape().expect("recipe was resolved at load")
    }
}

impl StudentSection {
    pub fn shape(&self) -> ModelShape {
        self.model.to_shape().expect("recipe was resolved at load")
    }
}

impl Recipe {
    /// Read, override, resolve and validate a recipe file. `overrides` are `a.b.c=value`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe> {
        let text = crate::error::read_to_string(path)?;
        Recipe::from_str_with(&text, path, overrides)
    }

    pub fn from_str_with(text: &str, path: &Path, overrides: &[String]) -> Result<Recipe> {
        let file = path.display().to_string();
        // First pass on the text itself, so type and unknown-key errors carry a line/column.
        let mut recipe: Recipe =
            toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
        if !overrides.is_empty() {
            let mut table: toml::Table =
                toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
            for ov in overrides {
                apply_override(&mut table, ov)?;
                recipe = toml::Value::Table(table.clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        Error::input(format!("--set {ov}: {}", e.message().trim()))
                    })?;
            }
        }
        recipe.resolve_shapes(&file, text, overrides)?;
        recipe.validate(&file, text, overrides)?;
        Ok(recipe)
    }

    fn resolve_shapes(&mut self, file: &str, text: &str, ov: &[String]) -> Result<()> {
        // A loaded teacher brings its shape (model.json or config.json).
        let teacher_shape = self.teacher.kind == TeacherKind::Pretrain;
        for (section, config, model) in [
            ("teacher", self.teacher.config.take(), &mut self.teacher.model),
            ("student", self.student.config.take(), &mut self.student.model),
        ] {
            if section == "teacher" && !teacher_shape {
                // Not used: the resolved recipe shows that by leaving them out.
                *model = PartialShape::default();
                continue;
            }
            let base = match &config {
                Some(p) => {
                    let t = crate::error::read_to_string(p).map_err(|e| {
                        let loc = locate(file, text, ov, &format!("{section}.config"));
                        Error::input(format!("{loc}: key `{section}.config`: {e}"))
                    })?;
                    toml::from_str::<PartialShape>(&t)
                        .map_err(|e| toml_error(&p.display().to_string(), &t, &e))?
                }
                None => PartialShape::default(),
            };
            let merged = model.over(&base);
            let shape = merged.to_shape().map_err(|missing| {
                let loc = locate(file, text, ov, &format!("{section}.model"));
                Error::input(format!(
                    "{loc}: key `{section}.model.{missing}` is required: set it under [{section}.model] or in the file named by `{section}.config`"
                ))
            })?;
            *model = PartialShape::from_shape(&shape);
        }
        Ok(())
    }

    /// Every semantic rule in one place. A failed rule names the key and where it is set.
    fn validate(&self, file: &str, text: &str, ov: &[String]) -> Result<()> {
        let fail = |key: &str, msg: String| -> Error {
            let loc = locate(file, text, ov, key);
            Error::input(format!("{loc}: key `{key}`: {msg}"))
        };
        let r = self;
        if r.run.name.is_empty() || r.run.name.contains(['/', '\\']) || r.run.name.starts_with('.') {
            return Err(fail("run.name", format!("expected a plain directory name, got {:?}", r.run.name)));
        }
        let b = r.run.backend;
        if !b.compiled_in() {
            return Err(fail("run.backend", format!(
                "backend {b:?} is not compiled into this binary; rebuild with `--features {}`",
                format!("{b:?}").to_lowercase()
            )));
        }
        let d = &r.data;
        if d.seq_len < 8 {
            return Err(fail("data.seq_len", format!("expected at least 8 tokens, got {}", d.seq_len)));
        }
        if d.streaming && d.synthetic_noise > 0.0 {
            return Err(fail("data.synthetic_noise", "needs the in-memory path: set data.streaming = false".into()));
        }
        if d.streaming && (d.filter.teacher_ppl_min.is_some() || d.filter.teacher_ppl_max.is_some()) {
            return Err(fail("data.filter.teacher_ppl_max", "the teacher-perplexity filter is not available with data.streaming = true yet".into()));
        }
        if !(0.0..=4.0).contains(&d.synthetic_noise) {
            return Err(fail("data.synthetic_noise", format!("expected a share in [0, 4], got {}", d.synthetic_noise)));
        }
        if !(d.valid_fraction > 0.0 && d.valid_fraction < 0.5) {
            return Err(fail("data.valid_fraction", format!("expected a value in (0, 0.5), got {}", d.valid_fraction)));
        }
        match d.source {
            SourceKind::Synthetic if d.synthetic_docs < 20 => {
                return Err(fail("data.synthetic_docs", format!("expected at least 20 documents, got {}", d.synthetic_docs)));
            }
            SourceKind::Text | SourceKind::Jsonl if d.paths.is_empty() => {
                return Err(fail("data.paths", "expected at least one input file for this source".into()));
            }
            _ => {}
        }
        for p in &d.paths {
            if !p.is_file() {
                return Err(fail("data.paths", format!("file {} does not exist", p.display())));
            }
        }
        let f = &d.filter;
        if f.min_chars > f.max_chars {
            return Err(fail("data.filter.min_chars", format!("min_chars ({}) is larger than max_chars ({})", f.min_chars, f.max_chars)));
        }
        for (name, v) in [("max_symbol_ratio", f.max_symbol_ratio), ("min_alpha_ratio", f.min_alpha_ratio),
            ("max_upper_ratio", f.max_upper_ratio), ("max_repeated_ngram_share", f.max_repeated_ngram_share),
            ("minhash_threshold", f.minhash_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(fail(&format!("data.filter.{name}"), format!("expected a value in [0, 1], got {v}")));
            }
        }
        if f.ngram_words == 0 {
            return Err(fail("data.filter.ngram_words", "expected a positive integer, got 0".into()));
        }
        if f.minhash_bands == 0 || f.minhash_perms % f.minhash_bands != 0 {
            return Err(fail("data.filter.minhash_bands", format!(
                "expected a positive divisor of minhash_perms ({}), got {}", f.minhash_perms, f.minhash_bands)));
        }
        if f.teacher_ppl_min.is_some() || f.teacher_ppl_max.is_some() {
            let (lo, hi) = (f.teacher_ppl_min.unwrap_or(1.0), f.teacher_ppl_max.unwrap_or(f64::INFINITY));
            if !(lo >= 1.0 && lo < hi) {
                return Err(fail("data.filter.teacher_ppl_min", format!("expected 1 <= teacher_ppl_min < teacher_ppl_max, got {lo} and {hi}")));
            }
            if r.teacher.kind == TeacherKind::Pretrain {
                return Err(fail("data.filter.teacher_ppl_min", "the teacher-perplexity filter needs a teacher before the data: teacher.kind = \"hf\" or \"checkpoint\"".into()));
            }
        }
        let t = &r.tokenizer;
        match t.kind {
            TokenizerKind::Train if !(300..=1 << 20).contains(&t.vocab_size) => {
                return Err(fail("tokenizer.vocab_size", format!(
                    "expected at least 300 (256 byte symbols + specials + merges) and at most 1048576, got {}", t.vocab_size)));
            }
            TokenizerKind::File => match &t.path {
                None => return Err(fail("tokenizer.path", "required when tokenizer.kind = \"file\"".into())),
                Some(p) if !p.is_file() => {
                    return Err(fail("tokenizer.path", format!("file {} does not exist", p.display())))
                }
                _ => {}
            },
            _ => {}
        }
        if r.teacher.kind != TeacherKind::Pretrain {
            let (kind, marker) = match r.teacher.kind {
                TeacherKind::Hf => ("hf", "config.json"),
                _ => ("checkpoint", "model.json"),
            };
            match &r.teacher.path {
                None => return Err(fail("teacher.path", format!("required when teacher.kind = \"{kind}\""))),
                // A cached teacher is offline: its cache stands in for a folder that is gone.
                Some(p) if !p.join(marker).is_file() && !(r.teacher.logits == LogitsSource::Cache && r.cache_dir().join("cache.json").is_file()) => {
                    return Err(fail("teacher.path", format!(
                        "{} is not a teacher directory for kind \"{kind}\" (no {marker} in it)", p.display())))
                }
                _ => {}
            }
            if t.kind == TokenizerKind::Train {
                return Err(fail("tokenizer.kind", "this teacher brings its own vocabulary: set tokenizer.kind = \"teacher\" (or \"file\" with the same tokenizer.json)".into()));
            }
        } else if t.kind == TokenizerKind::Teacher {
            return Err(fail("tokenizer.kind", "\"teacher\" needs teacher.kind = \"hf\" or \"checkpoint\"; a pretrained teacher uses the trained tokenizer".into()));
        }
        let mut shapes = vec![("student", r.student.shape())];
        if r.teacher.kind == TeacherKind::Pretrain {
            shapes.insert(0, ("teacher", r.teacher.shape()));
        }
        for (who, s) in shapes {
            let k = |name: &str| format!("{who}.model.{name}");
            for (name, v) in [("d_model", s.d_model), ("n_layers", s.n_layers), ("n_heads", s.n_heads),
                ("n_kv_heads", s.n_kv_heads), ("d_ff", s.d_ff)] {
                if v == 0 {
                    return Err(fail(&k(name), "expected a positive integer, got 0".into()));
                }
            }
            if s.n_heads % s.n_kv_heads != 0 {
                return Err(fail(&k("n_kv_heads"), format!(
                    "n_heads ({}) must be divisible by n_kv_heads ({})", s.n_heads, s.n_kv_heads)));
            }
            if s.d_model % s.n_heads != 0 || (s.d_model / s.n_heads) % 2 != 0 {
                return Err(fail(&k("n_heads"), format!(
                    "d_model ({}) must split into n_heads ({}) heads of even size (RoPE rotates pairs)", s.d_model, s.n_heads)));
            }
            if d.seq_len > s.max_seq_len {
                return Err(fail("data.seq_len", format!(
                    "seq_len ({}) exceeds the {who}'s context {who}.model.max_seq_len ({})", d.seq_len, s.max_seq_len)));
            }
            if !(s.rope_theta > 0.0) {
                return Err(fail(&k("rope_theta"), format!("expected > 0, got {}", s.rope_theta)));
            }
            if !(s.norm_eps > 0.0 && s.norm_eps < 1.0) {
                return Err(fail(&k("norm_eps"), format!("expected a value in (0, 1), got {}", s.norm_eps)));
            }
            if s.layer_pattern.is_empty() || !s.layer_pattern.chars().all(|c| c == 'A' || c == 'M') {
                return Err(fail(&k("layer_pattern"), format!(
                    "expected a non-empty string of A (attention) and M (Mamba-2), got {:?}", s.layer_pattern)));
            }
            if s.window == Some(0) {
                return Err(fail(&k("window"), "expected a window of at least 1 token".into()));
            }
            if let Some(rs) = &s.rope_scaling {
                let kk = |n: &str| k(&format!("rope_scaling.{n}"));
                if !(rs.factor >= 1.0) {
                    return Err(fail(&kk("factor"), format!("expected >= 1, got {}", rs.factor)));
                }
                if !(rs.low_freq_factor > 0.0 && rs.low_freq_factor < rs.high_freq_factor) {
                    return Err(fail(&kk("low_freq_factor"), format!(
                        "expected 0 < low_freq_factor < high_freq_factor ({}), got {}", rs.high_freq_factor, rs.low_freq_factor)));
                }
                if rs.original_max_position_embeddings == 0 {
                    return Err(fail(&kk("original_max_position_embeddings"), "expected a positive integer, got 0".into()));
                }
            }
            if s.layer_pattern.contains('M') {
                let m = &s.mamba;
                let km = |n: &str| k(&format!("mamba.{n}"));
                for (name, v) in [("d_state", m.d_state), ("head_dim", m.head_dim), ("expand", m.expand),
                    ("d_conv", m.d_conv), ("n_groups", m.n_groups), ("chunk_size", m.chunk_size)] {
                    if v == 0 {
                        return Err(fail(&km(name), "expected a positive integer, got 0".into()));
                    }
                }
                let d_inner = m.expand * s.d_model;
                if d_inner % m.head_dim != 0 {
                    return Err(fail(&km("head_dim"), format!(
                        "expand * d_model ({d_inner}) must be divisible by head_dim ({})", m.head_dim)));
                }
                if (d_inner / m.head_dim) % m.n_groups != 0 {
                    return Err(fail(&km("n_groups"), format!(
                        "the {} SSM heads must split evenly into n_groups ({})", d_inner / m.head_dim, m.n_groups)));
                }
            }
        }
        if !(0.0..=1.0).contains(&r.distill.alpha) {
            return Err(fail("distill.alpha", format!("expected 0 <= alpha <= 1, got {}", r.distill.alpha)));
        }
        for (name, v) in [("jsd_beta", r.distill.jsd_beta), ("skew_lambda", r.distill.skew_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(fail(&format!("distill.{name}"), format!("expected a value in [0, 1], got {v}")));
            }
        }
        if !(r.distill.temperature > 0.0 && r.distill.temperature.is_finite()) {
            return Err(fail("distill.temperature", format!("expected tau > 0, got {}", r.distill.temperature)));
        }
        for (prefix, o) in [("optim", &r.optim), ("teacher.optim", &r.teacher.optim)] {
            let k = |name: &str| format!("{prefix}.{name}");
            if !(o.lr > 0.0 && o.lr.is_finite()) {
                return Err(fail(&k("lr"), format!("expected a learning rate > 0, got {}", o.lr)));
            }
            if !(o.min_lr >= 0.0 && o.min_lr <= o.lr) {
                return Err(fail(&k("min_lr"), format!("expected 0 <= min_lr <= lr ({}), got {}", o.lr, o.min_lr)));
            }
            for (name, v) in [("beta1", o.beta1), ("beta2", o.beta2)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(fail(&k(name), format!("expected a value in [0, 1), got {v}")));
                }
            }
            if !(o.eps > 0.0) {
                return Err(fail(&k("eps"), format!("expected > 0, got {}", o.eps)));
            }
            if !(o.weight_decay >= 0.0) || !(o.grad_clip >= 0.0) {
                let name = if o.weight_decay >= 0.0 { "grad_clip" } else { "weight_decay" };
                return Err(fail(&k(name), "expected a value >= 0".into()));
            }
            for (name, v) in [("batch_size", o.batch_size), ("grad_accum", o.grad_accum), ("steps", o.steps)] {
                if v == 0 {
                    return Err(fail(&k(name), "expected a positive integer, got 0".into()));
                }
            }
            if o.warmup_steps > o.steps {
                return Err(fail(&k("warmup_steps"), format!("warmup_steps ({}) exceeds steps ({})", o.warmup_steps, o.steps)));
            }
        }
        if r.teacher.dtype != TeacherDtype::F32 && r.teacher.kind == TeacherKind::Pretrain && r.teacher.shape().layer_pattern.contains('M') {
            return Err(fail("teacher.dtype", "half precision is supported for attention-only teachers; this teacher has Mamba-2 layers".into()));
        }
        if r.distill.chunk_tokens == 0 {
            return Err(fail("distill.chunk_tokens", "expected a positive integer, got 0".into()));
        }
        if let Some(a) = r.distill.alpha_end {
            if !(0.0..=1.0).contains(&a) {
                return Err(fail("distill.alpha_end", format!("expected 0 <= alpha_end <= 1, got {a}")));
            }
        }
        if let Some(t) = r.distill.temperature_end {
            if !(t > 0.0 && t.is_finite()) {
                return Err(fail("distill.temperature_end", format!("expected tau > 0, got {t}")));
            }
            if r.teacher.logits == LogitsSource::Cache && r.cache.tail == TailMode::Other && t != r.distill.temperature {
                return Err(fail("distill.temperature_end", "a temperature schedule with the teacher cache needs cache.tail = \"renormalize\" (the cache stores the tail mass at fixed temperatures only)".into()));
            }
        }
        let c = &r.curriculum;
        if !(0.0..=1.0).contains(&c.start) {
            return Err(fail("curriculum.start", format!("expected a competence in [0, 1], got {}", c.start)));
        }
        if !(c.ramp > 0.0 && c.ramp <= 1.0) {
            return Err(fail("curriculum.ramp", format!("expected a fraction of training in (0, 1], got {}", c.ramp)));
        }
        if !(0.0..=1.0).contains(&c.min_weight) {
            return Err(fail("curriculum.min_weight", format!("expected a weight in [0, 1], got {}", c.min_weight)));
        }
        if c.stages == 0 {
            return Err(fail("curriculum.stages", "expected a positive integer, got 0".into()));
        }
        if c.schedule == Schedule::SelfPaced && c.order == RowOrder::EasyToHard {
            return Err(fail("curriculum.order", "easy_to_hard needs a stored difficulty score; self_paced ranks by the student's loss".into()));
        }
        if r.cache.k == 0 || r.cache.rows_per_shard == 0 {
            let name = if r.cache.k == 0 { "k" } else { "rows_per_shard" };
            return Err(fail(&format!("cache.{name}"), "expected a positive integer, got 0".into()));
        }
        if r.cache.k > 1 << 20 {
            return Err(fail("cache.k", format!("expected at most 1048576 (a whole vocabulary), got {}", r.cache.k)));
        }
        if r.checkpoint.every_steps == 0 || r.checkpoint.keep_last == 0 {
            let name = if r.checkpoint.every_steps == 0 { "every_steps" } else { "keep_last" };
            return Err(fail(&format!("checkpoint.{name}"), "expected a positive integer, got 0".into()));
        }
        if r.eval.every_steps == 0 || r.eval.batches == 0 {
            let name = if r.eval.every_steps == 0 { "every_steps" } else { "batches" };
            return Err(fail(&format!("eval.{name}"), "expected a positive integer, got 0".into()));
        }
        Ok(())
    }

    /// The fully resolved recipe as TOML: what `validate` prints and the run directory keeps.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe always serializes")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.out_dir.join(&self.run.name)
    }

    /// Where the teacher's top-k cache lives.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.path.clone().unwrap_or_else(|| self.run_dir().join("teacher_cache"))
    }
}

/// `a.b.c=value`: the value is read as a TOML value when it parses as one, else as a string,
/// so `--set run.name=foo` works without quotes.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) = ov
        .split_once('=')
        .ok_or_else(|| Error::input(format!("--set {ov}: expected KEY=VALUE, e.g. optim.lr=3e-4")))?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::input(format!("--set {ov}: `{key}` is not a key path like optim.lr")));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            Error::input(format!("--set {ov}: `{p}` is a value, not a section"))
        })?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Where `key` is set: `file:line:col`, or the `--set` that set it, or the section it would
/// belong to when it took its default.
fn locate(file: &str, text: &str, overrides: &[String], key: &str) -> String {
    if let Some(ov) = overrides.iter().rev().find(|o| {
        o.split_once('=').map(|(k, _)| k.trim()) == Some(key)
    }) {
        return format!("--set {ov}");
    }
    let mut best: Option<(usize, usize)> = None;
    let mut section_line: Option<usize> = None;
    let mut section_len = 0;
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(h) = t.strip_prefix('[') {
            section = h.split(']').next().unwrap_or("").trim_matches('[').trim().to_string();
            // The deepest section enclosing the key is where its default applies.
            if key.starts_with(&format!("{section}.")) && section.len() >= section_len {
                section_len = section.len();
                section_line = Some(i + 1);
            }
            if section == key {
                best = Some((i + 1, indent + 1));
            }
            continue;
        }
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim().trim_matches('"');
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            let full = if section.is_empty() { k.to_string() } else { format!("{section}.{k}") };
            if full == key {
                best = Some((i + 1, indent + 1));
            }
        }
    }
    match (best, section_line) {
        (Some((l, c)), _) => format!("{file}:{l}:{c}"),
        (None, Some(l)) => format!("{file}:{l} (default value in this section)"),
        (None, None) => format!("{file} (default value, key not set)"),
    }
}

/// The dotted key path of the key defined on 1-based line `line_no`, if any.
fn key_at_line(text: &str, line_no: usize) -> Option<String> {
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            section = h.split(']').next().unwrap_or("").trim_matches('[').trim().to_string();
            if i + 1 == line_no {
                return Some(section);
            }
            continue;
        }
        if i + 1 == line_no {
            let k = t.split_once('=')?.0.trim().trim_matches('"');
            return Some(if section.is_empty() { k.to_string() } else { format!("{section}.{k}") });
        }
    }
    None
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            match key_at_line(text, line) {
                Some(key) => Error::input(format!("{file}:{line}:{col}: key `{key}`: {msg}")),
                None => Error::input(format!("{file}:{line}:{col}: {msg}")),
            }
        }
        None => Error::input(format!("{file}: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"[run]
name = "t"

[data]
seq_len = 64

[teacher.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 128
max_seq_len = 128

[student.model]
d_model = 32
n_layers = 1
n_heads = 4
n_kv_heads = 1
d_ff = 64

[distill]
alpha = 0.5
temperature = 2.0

[optim]
lr = 0.001
warmup_steps = 10
steps = 100
"#;

    fn err(text: &str, overrides: &[&str]) -> String {
        let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let e = Recipe::from_str_with(text, Path::new("r.toml"), &ov).unwrap_err();
        assert!(matches!(e, Error::Input(_)));
        assert_eq!(e.exit_code(), 2);
        e.to_string()
    }

    fn with(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replacen(from, to, 1)
    }

    #[test]
    fn base_recipe_is_valid_and_resolves_defaults() {
        let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &[]).unwrap();
        let s = r.student.shape();
        assert_eq!((s.n_kv_heads, s.max_seq_len, s.tie_embeddings), (1, 512, false));
        assert_eq!(r.optim.batch_size, 16);
        // The printed resolved recipe loads back to the same recipe.
        let again = Recipe::from_str_with(&r.to_toml(), Path::new("resolved.toml"), &[]).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let m = err(&with("alpha = 0.5", "alpah = 0.5"), &[]);
        assert!(m.starts_with("r.toml:23:1: key `distill.alpah`: unknown field `alpah`, expected one of `alpha`, `temperature`, `divergence`"), "{m}");
    }

    #[test]
    fn wrong_type_names_key_and_position() {
        let m = err(&with("d_ff = 128", "d_ff = \"wide\""), &[]);
        assert!(m.starts_with("r.toml:12:8: key `teacher.model.d_ff`: invalid type: string \"wide\", expected usize"), "{m}");
    }

    #[test]
    fn heads_must_divide() {
        let m = err(&with("n_kv_heads = 2", "n_kv_heads = 3"), &[]);
        assert_eq!(m, "r.toml:11:1: key `teacher.model.n_kv_heads`: n_heads (4) must be divisible by n_kv_heads (3)");
        let m = err(&with("d_model = 32", "d_model = 36"), &[]);
        assert!(m.starts_with("r.toml:18:1: key `student.model.n_heads`: d_model (36) must split into n_heads (4) heads of even size"), "{m}");
    }

    #[test]
    fn alpha_and_temperature_ranges() {
        assert_eq!(err(&with("alpha = 0.5", "alpha = 1.5"), &[]), "r.toml:23:1: key `distill.alpha`: expected 0 <= alpha <= 1, got 1.5");
        assert_eq!(err(&with("temperature = 2.0", "temperature = 0.0"), &[]), "r.toml:24:1: key `distill.temperature`: expected tau > 0, got 0");
        assert_eq!(err(BASE, &["distill.alpha=-0.1"]), "--set distill.alpha=-0.1: key `distill.alpha`: expected 0 <= alpha <= 1, got -0.1");
    }

    #[test]
    fn seq_len_within_both_contexts() {
        let m = err(&with("seq_len = 64", "seq_len = 256"), &[]);
        assert_eq!(m, "r.toml:5:1: key `data.seq_len`: seq_len (256) exceeds the teacher's context teacher.model.max_seq_len (128)");
    }

    #[test]
    fn paths_must_exist() {
        let m = err(&with("[data]\n", "[data]\nsource = \"jsonl\"\npaths = [\"/no/such.jsonl\"]\n"), &[]);
        assert_eq!(m, "r.toml:6:1: key `data.paths`: file /no/such.jsonl does not exist");
        let m = err(&with("[student.model]\n", "[student]\nconfig = \"/no/student.toml\"\n\n[student.model]\n"), &[]);
        assert!(m.starts_with("r.toml:16:1: key `student.config`: /no/student.toml: cannot read file"), "{m}");
    }

    #[test]
    fn config_files_are_merged_under_inline_keys_and_report_their_own_errors() {
        let dir = std::env::temp_dir().join(format!("distill-recipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("s.toml");
        std::fs::write(&cfg, "d_model = 48\nn_layers = 3\nn_heads = 4\nd_ff = 96\n").unwrap();
        let text = with("[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nn_kv_heads = 1\nd_ff = 64\n",
            &format!("[student]\nconfig = \"{}\"\n\n[student.model]\nn_layers = 2\n", cfg.display()));
        let r = Recipe::from_str_with(&text, Path::new("r.toml"), &[]).unwrap();
        let s = r.student.shape();
        assert_eq!((s.d_model, s.n_layers, s.n_kv_heads, s.d_ff), (48, 2, 4, 96));
        std::fs::write(&cfg, "d_model = 48\nn_layer = 3\n").unwrap();
        let m = err(&text, &[]);
        assert!(m.starts_with(&format!("{}:2:1: key `n_layer`: unknown field `n_layer`", cfg.display())), "{m}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_required_shape_key() {
        let m = err(&with("d_ff = 64\n", ""), &[]);
        assert!(m.starts_with("r.toml:15:1: key `student.model.d_ff` is required"), "{m}");
    }

    #[test]
    fn optimizer_and_data_ranges() {
        assert_eq!(err(&with("lr = 0.001", "lr = 0.0"), &[]), "r.toml:27:1: key `optim.lr`: expected a learning rate > 0, got 0");
        assert_eq!(err(&with("warmup_steps = 10", "warmup_steps = 200"), &[]), "r.toml:28:1: key `optim.warmup_steps`: warmup_steps (200) exceeds steps (100)");
        assert_eq!(err(BASE, &["optim.batch_size=0"]), "--set optim.batch_size=0: key `optim.batch_size`: expected a positive integer, got 0");
        assert_eq!(err(BASE, &["data.valid_fraction=0.9"]), "--set data.valid_fraction=0.9: key `data.valid_fraction`: expected a value in (0, 0.5), got 0.9");
        let m = err(BASE, &["tokenizer.vocab_size=100"]);
        assert!(m.starts_with("--set tokenizer.vocab_size=100: key `tokenizer.vocab_size`: expected at least 300"), "{m}");
        let m = err(BASE, &["teacher.optim.beta2=1.0"]);
        assert_eq!(m, "--set teacher.optim.beta2=1.0: key `teacher.optim.beta2`: expected a value in [0, 1), got 1");
        assert_eq!(err(BASE, &["run.name=a/b"]), "--set run.name=a/b: key `run.name`: expected a plain directory name, got \"a/b\"");
        let m = err(BASE, &["tokenizer.kind=file"]);
        assert!(m.starts_with("r.toml (default value, key not set): key `tokenizer.path`: required when tokenizer.kind = \"file\""), "{m}");
    }

    #[test]
    fn overrides_apply_and_report_bad_values() {
        let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &["optim.lr=3e-4".into(), "run.name=other".into()]).unwrap();
        assert_eq!((r.optim.lr, r.run.name.as_str()), (3e-4, "other"));
        let m = err(BASE, &["optim.steps=many"]);
        assert!(m.starts_with("--set optim.steps=many: invalid type: string \"many\", expected usize"), "{m}");
        assert!(err(BASE, &["optim.lr"]).contains("expected KEY=VALUE"));
        assert!(err(BASE, &["optim.nope=1"]).contains("unknown field `nope`"));
    }

    #[test]
    fn backends_not_compiled_in_are_refused() {
        if cfg!(feature = "cuda") {
            return;
        }
        let m = err(&with("name = \"t\"", "name = \"t\"\nbackend = \"cuda\""), &[]);
        assert_eq!(m, "r.toml:3:1: key `run.backend`: backend Cuda is not compiled into this binary; rebuild with `--features cuda`");
    }

    #[test]
    fn loaded_teachers_bring_shape_and_vocabulary() {
        let m = err(BASE, &["tokenizer.kind=teacher"]);
        assert!(m.contains("key `tokenizer.kind`: \"teacher\" needs teacher.kind = \"hf\" or \"checkpoint\""), "{m}");
        let m = err(BASE, &["teacher.kind=hf"]);
        assert!(m.contains("key `teacher.path`: required when teacher.kind = \"hf\""), "{m}");
        let m = err(BASE, &["teacher.kind=hf", "teacher.path=/no/such/dir"]);
        assert!(m.contains("/no/such/dir is not a teacher directory for kind \"hf\" (no config.json in it)"), "{m}");
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/llama-gqa");
        let ov = ["teacher.kind=hf".to_string(), format!("teacher.path={fixture}")];
        let m = err(BASE, &[ov[0].as_str(), ov[1].as_str()]);
        assert!(m.contains("key `tokenizer.kind`: this teacher brings its own vocabulary"), "{m}");
        let mut ok = ov.to_vec();
        ok.push("tokenizer.kind=teacher".into());
        let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &ok).unwrap();
        assert_eq!(r.teacher.model, PartialShape::default(), "the recipe's teacher shape is not used");
    }
}
