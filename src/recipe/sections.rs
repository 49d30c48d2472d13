//! Every section of a recipe as plain serde data, each with its defaults next to it: a
//! section left out of the file, or a key left out of a section, takes the value below.
//! Sections that configure one module live in it (`data::config`, `teacher::config`,
//! `train::config`, `curriculum`) and are re-exported here, so that module need not import
//! the recipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PartialShape;
pub use crate::curriculum::{CurriculumSection, DifficultyScore, RowOrder, Schedule};
pub use crate::data::config::{
    DataFormat, DataSection, Dedup, FilterSection, LossOn, Packing, SourceKind, SyntheticFormat, TokenizerKind,
    TokenizerSection,
};
pub use crate::device::Backend;
use crate::export::ExportFormat;
pub use crate::import::{PruneSection, StudentInit};
use crate::kd_loss::Divergence;
pub use crate::kd_loss::hidden::{HiddenLoss, HiddenSection, LayerPairs};
pub use crate::quant::fake_quant::{QatSection, Scheme};
pub use crate::teacher::config::{CacheSection, LogitsSource, TeacherDtype, TeacherKind};
pub use crate::train::config::{CheckpointSection, EvalSection, OnNan, OptimSection, Precision};
pub use crate::train::recompute::Checkpointing;

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
    /// Training compute precision (f32 or bf16 mixed precision); left out of the resolved
    /// recipe when f32, so runs made before the key existed still resume.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// `stop`, `skip` or `rollback` on a non-finite loss or gradient (left out when `stop`,
    /// so that runs made before the key existed still resume).
    #[serde(default, skip_serializing_if = "OnNan::is_stop")]
    pub on_nan: OnNan,
    /// How many skips in a row, or rollbacks in all, `on_nan` may take before it stops.
    #[serde(default = "d_nan_retries", skip_serializing_if = "is_default_retries")]
    pub nan_retries: u32,
    /// `none`, `layers` or `every_n`: which decoder blocks keep only their inputs through the
    /// forward pass and run again in the backward (`train::recompute`).
    #[serde(default, skip_serializing_if = "Checkpointing::is_none")]
    pub activation_checkpointing: Checkpointing,
    /// With `every_n`: one block in this many is recomputed.
    #[serde(default = "d_checkpoint_every", skip_serializing_if = "is_default_checkpoint_every")]
    pub checkpoint_every: usize,
}

impl RunSection {
    /// Every how many blocks one is recomputed; `None` without activation checkpointing.
    pub fn recompute_every(&self) -> Option<usize> {
        self.activation_checkpointing.every(self.checkpoint_every)
    }
}

fn d_checkpoint_every() -> usize {
    2
}
fn is_default_checkpoint_every(n: &usize) -> bool {
    *n == d_checkpoint_every()
}

fn d_nan_retries() -> u32 {
    3
}
fn is_default_retries(n: &u32) -> bool {
    *n == d_nan_retries()
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
    /// Where the first weights come from: random (default), hf, gguf, or prune (the teacher).
    #[serde(skip_serializing_if = "StudentInit::is_random")]
    pub init: StudentInit,
    /// The HF folder (`init = "hf"`) or GGUF file (`init = "gguf"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Parameter groups that stay as loaded: "embedding", "lm_head", "norms", "layers i..j".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// How `init = "prune"` ranks and cuts (left out of the resolved recipe otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSection>,
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
    /// exists at a time. Unset: [`DistillSection::chunk_tokens_for`] sizes it to the vocabulary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_tokens: Option<usize>,
    /// If set, alpha moves linearly from `alpha` to `alpha_end` over training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_end: Option<f64>,
    /// If set, tau moves linearly from `temperature` to `temperature_end` over training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_end: Option<f64>,
    /// A hidden-state loss between block outputs (off at weight 0, and then left out of the
    /// resolved recipe).
    #[serde(skip_serializing_if = "hidden_off")]
    pub hidden: HiddenSection,
    /// On-policy distillation (off at fraction 0, and then left out of the resolved recipe).
    #[serde(skip_serializing_if = "crate::on_policy::off")]
    pub on_policy: crate::on_policy::OnPolicySection,
}

impl DistillSection {
    /// The loss's chunk in tokens: `chunk_tokens` if set, else as many as keep one chunk's f32
    /// logits within [`CHUNK_BYTES`] (1,024 at vocabulary 32k, 256 at 128k; a multiple of 256,
    /// 256 to 16,384). At 128k with hidden 4,096 that keeps the fused loss at 0.12x the naive
    /// loss's GPU memory (Liger picks 256 there too); at 32k, 1,024 and 4,096 trained at the
    /// same speed within the H200's run-to-run spread (BENCHMARKS.md).
    pub fn chunk_tokens_for(&self, vocab: usize) -> usize {
        self.chunk_tokens.unwrap_or_else(|| (CHUNK_BYTES / (4 * vocab.max(1)) / 256 * 256).clamp(256, 16384))
    }
}

/// `[distill.hidden]` at weight 0 (or unset): no hidden-state loss.
pub fn hidden_off(h: &HiddenSection) -> bool {
    h.weight == 0.0
}

/// The default budget of one loss chunk's `[tokens, vocab]` f32 logits.
pub const CHUNK_BYTES: usize = 128 << 20;

impl Default for DistillSection {
    fn default() -> Self {
        DistillSection {
            alpha: 0.5,
            temperature: 1.0,
            divergence: DivergenceKind::ForwardKl,
            jsd_beta: 0.5,
            skew_lambda: 0.1,
            chunk_tokens: None,
            alpha_end: None,
            temperature_end: None,
            hidden: HiddenSection::default(),
            on_policy: Default::default(),
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
