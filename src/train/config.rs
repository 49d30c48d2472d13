//! The training sections of a recipe (`[optim]`, `[teacher.optim]`, `[checkpoint]`, `[eval]`):
//! plain data next to the loop they configure; the recipe validates them once at load.

use serde::{Deserialize, Serialize};

use super::decay::NoDecay;

/// `run.on_nan`: what a non-finite loss or gradient norm does. Non-finite weights are never
/// written in any case (the update is not applied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNan {
    /// Stop with an error naming the step (the last checkpoint is intact).
    #[default]
    Stop,
    /// Drop that batch's update and go on with the next batch (at most `run.nan_retries`
    /// batches in a row).
    Skip,
    /// Reload the newest checkpoint and continue from it with half the learning rate, at most
    /// `run.nan_retries` times in the run.
    Rollback,
}

impl OnNan {
    pub fn is_stop(&self) -> bool {
        *self == OnNan::Stop
    }
}

/// `run.precision`: the dtype training computes in. `bf16` is mixed precision as torch's
/// autocast: the forward and backward run in bf16 through a bf16 copy of the weights made
/// each micro-batch (the cast's backward carries the gradients back), while the master weights,
/// the gradients the optimizer sees and its moments stay f32. Losses are taken in f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The compute dtype when it differs from the f32 master weights.
    pub fn compute_dtype(self) -> Option<burn::tensor::DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::DType::BF16),
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Parameter groups that weight decay leaves alone (the matrices are always decayed).
    pub no_decay: Vec<NoDecay>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Optimizer steps (each of `batch_size * grad_accum` sequences).
    pub steps: usize,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 2e-3,
            min_lr: 2e-4,
            warmup_steps: 20,
            weight_decay: 0.01,
            no_decay: vec![NoDecay::Norm, NoDecay::Bias, NoDecay::Embedding, NoDecay::Ssm],
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            batch_size: 16,
            grad_accum: 1,
            steps: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSection {
    pub every_steps: usize,
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every_steps: 50, keep_last: 2 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    pub every_steps: usize,
    /// Held-out batches per periodic evaluation (the final evaluation uses the whole split).
    pub batches: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { every_steps: 50, batches: 8 }
    }
}
