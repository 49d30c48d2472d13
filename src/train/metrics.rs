//! `metrics.jsonl`: one JSON object per line (its curves are drawn by `report::plots`).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, io_ctx};

/// One line of `metrics.jsonl`: one optimizer step of one phase. The keys are the file's
/// format (README); optional ones appear only when they apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub phase: String,
    pub step: usize,
    pub lr: f64,
    /// Token-weighted mean over the step's micro-batches: `alpha * ce + (1 - alpha) tau^2 kl`.
    pub loss: f64,
    pub ce: f64,
    /// The divergence term (distillation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// The hidden-state loss (`[distill.hidden]`), before its weight; `loss` includes it weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<f64>,
    /// MoE students: the load-balancing loss (mean over MoE layers, before its coefficient;
    /// `loss` includes it weighted), and each MoE layer's share of assignments per expert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_aux: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_load: Option<Vec<Vec<f64>>>,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) input tokens trained on so far in this phase.
    pub tokens: u64,
    /// Targets in this step's loss (chat data: the assistant's tokens; packed documents: no
    /// target crossing a boundary), the count its mean is over.
    #[serde(default)]
    pub loss_tokens: u64,
    pub tok_per_s: f64,
    pub elapsed_s: f64,
    /// With alpha / tau schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// With a curriculum: competence and the row-weight statistics of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub competence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_share: Option<f64>,
    /// With `[distill.on_policy]`: the step's micro-batches the student wrote, and the seconds
    /// spent writing them (generation; the teacher's scoring and the training follow as usual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_policy: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_s: Option<f64>,
    /// At periodic evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_ppl: Option<f64>,
}

pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Open for appending, first dropping the lines of `phase` after `keep_through_step` (a
    /// resumed run recomputes them) and every line of a later phase.
    pub fn open(path: &Path, phase: &str, keep_through_step: usize) -> Result<Self> {
        let lines = read(path);
        let mut kept = String::new();
        let mut seen_phase = false;
        for v in &lines {
            if v.phase == phase {
                seen_phase = true;
                if v.step > keep_through_step {
                    continue;
                }
            } else if seen_phase {
                continue;
            }
            kept += &serde_json::to_string(v).expect("a metrics row serializes");
            kept.push('\n');
        }
        crate::util::write_atomic(path, kept.as_bytes())?;
        let file =
            io_ctx(std::fs::OpenOptions::new().append(true).create(true).open(path), || format!("{}", path.display()))?;
        Ok(MetricsLog { file })
    }

    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        let line = serde_json::to_string(row).expect("a metrics row serializes");
        io_ctx(writeln!(self.file, "{line}").and_then(|_| self.file.flush()), || "metrics.jsonl".into())
    }
}

/// The rows of a metrics file (a missing file or an unreadable line reads as nothing: a crash
/// may have cut the last line short).
pub fn read(path: &Path) -> Vec<MetricsRow> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
