//! On-policy distillation (GKD, Agarwal et al. 2024; TRL's DistillationTrainer): on a share
//! of the batches the student writes the completions itself and the teacher grades every
//! token it wrote. Each such batch keeps its rows' prompts (the tokens before a row's first
//! loss target: the system and user turns the template rendered), samples up to
//! `max_new_tokens` continuations from the student with no autodiff graph, and becomes a
//! batch of prompt + sample rows whose loss covers the sampled tokens only (a drawn stop id
//! included: the student learns where to stop). The teacher then scores those rows in one
//! forward pass, and the loss is the divergence alone (no cross-entropy on the student's own
//! samples), through the same chunked, fused-head loss as every batch.
//!
//! Which batches, and every draw, are functions of (seed, step, micro-batch, row): a resumed
//! run makes the same choices and samples with no generator state to save.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::pack::{Batch, Packed};
use crate::generate::{Generated, Sampling, Timing, generate_batch, row_rng};
use crate::kd_loss::Divergence;
use crate::model::Decoder;
use crate::rng::SplitMix;

pub mod eval;
#[cfg(test)]
mod tests;

/// `[distill.on_policy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnPolicySection {
    /// GKD's lambda: the share of batches whose completions the student samples (0 = off).
    pub fraction: f64,
    /// Tokens the student writes per prompt at most (less where the row ends first).
    pub max_new_tokens: usize,
    /// Sampling temperature of the student's completions (0 = greedy).
    pub temperature: f64,
    /// Nucleus cut of the student's sampling (1 = none).
    pub top_p: f64,
    /// reverse_kl (default, as TRL's DistillationTrainer), forward_kl or jsd.
    pub divergence: OnPolicyDivergence,
    /// JSD's weight of the teacher in the mixture (0 = forward KL, 1 = reverse KL).
    pub jsd_beta: f64,
}

impl Default for OnPolicySection {
    fn default() -> Self {
        OnPolicySection {
            fraction: 0.0,
            max_new_tokens: 128,
            temperature: 1.0,
            top_p: 1.0,
            divergence: OnPolicyDivergence::ReverseKl,
            jsd_beta: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPolicyDivergence {
    ReverseKl,
    ForwardKl,
    Jsd,
}

/// `[distill.on_policy]` left out (or at fraction 0): nothing on-policy, and nothing written
/// to the resolved recipe (runs made before the section existed still resume).
pub fn off(s: &OnPolicySection) -> bool {
    s.fraction == 0.0
}

impl OnPolicySection {
    pub fn divergence(&self) -> Divergence {
        match self.divergence {
            OnPolicyDivergence::ReverseKl => Divergence::ReverseKl,
            OnPolicyDivergence::ForwardKl => Divergence::ForwardKl,
            OnPolicyDivergence::Jsd => Divergence::Jsd { beta: self.jsd_beta },
        }
    }

    /// Whether micro-batch `micro` of step `step` is on-policy: a draw of its own, so the
    /// share over a run is `fraction` and a resumed run draws the same.
    pub fn takes(&self, seed: u64, step: usize, micro: usize) -> bool {
        self.fraction >= 1.0 || (self.fraction > 0.0 && draw_rng(seed, step, micro, u64::MAX).uniform() < self.fraction)
    }

    fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_k: 0,
            top_p: self.top_p,
            seed: 0,
            max_tokens: self.max_new_tokens,
        }
    }
}

/// The generator of row `row` of micro-batch `micro` at step `step`.
fn draw_rng(seed: u64, step: usize, micro: usize, row: u64) -> SplitMix {
    let job = row_rng(seed ^ 0x6F6E_706F_6C69_6379, ((step as u64) << 20) ^ micro as u64);
    row_rng(job.0, row)
}

/// An on-policy batch and what making it cost.
pub struct Rollout {
    pub batch: Batch,
    pub timing: Timing,
    /// Tokens the student wrote (the loss tokens).
    pub sampled: usize,
}

/// Row `r`'s prompt: its inputs up to and including the one before the first loss target
/// (`None` when the row has no loss target, or one at its very first position).
pub fn prompt_of(inputs: &[u32], mask: &[f32]) -> Option<Vec<u32>> {
    let first = mask.iter().position(|&m| m > 0.0)?;
    Some(inputs[..=first].to_vec())
}

/// Build the on-policy batch of `rows` (of `data`): prompts from the rows, completions from
/// `student` (the plain, untracked model), rows of `seq_len` tokens placed on `device`. A row
/// without a prompt keeps its data as it is (it has no loss tokens either way, or none before).
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    cfg: &OnPolicySection,
    student: &Decoder,
    data: &Packed,
    rows: &[usize],
    stops: &[u32],
    (seed, step, micro): (u64, usize, usize),
    sample_device: &Device,
    device: &Device,
) -> Rollout {
    let t = data.seq_len();
    let pad = data.pad_id();
    let raw: Vec<(Vec<u32>, Vec<u32>, Vec<f32>)> = rows.iter().map(|&r| data.row(r)).collect();
    let prompts: Vec<Option<Vec<u32>>> = raw.iter().map(|(i, _, m)| prompt_of(i, m)).collect();
    // Who samples: rows with a prompt shorter than the row (room for at least one token).
    let who: Vec<usize> = (0..rows.len()).filter(|&i| prompts[i].as_ref().is_some_and(|p| p.len() < t)).collect();
    let asked: Vec<Vec<u32>> = who.iter().map(|&i| prompts[i].clone().expect("has a prompt")).collect();
    let rngs = who.iter().map(|&i| draw_rng(seed, step, micro, i as u64)).collect();
    // A completion running past its row's end is cut there.
    let s = cfg.sampling();
    let (written_rows, timing) = generate_batch(student, &asked, rngs, stops, &s, sample_device);
    let mut written: Vec<Option<Generated>> = vec![None; rows.len()];
    for (&i, g) in who.iter().zip(written_rows) {
        written[i] = Some(g);
    }
    let (mut inp, mut tgt, mut msk) = (Vec::with_capacity(rows.len() * t), Vec::new(), Vec::new());
    let mut input_tokens = 0;
    for (i, (ri, rt, rm)) in raw.into_iter().enumerate() {
        let (ri, rt, rm) = match (&prompts[i], &written[i]) {
            (Some(p), Some(g)) => {
                let mut seq = g.sequence(p);
                seq.truncate(t + 1);
                let n = seq.len() - 1;
                let mut m = vec![0f32; t];
                m[p.len() - 1..n].iter_mut().for_each(|x| *x = 1.0);
                let (mut a, mut b) = (seq[..n].to_vec(), seq[1..].to_vec());
                input_tokens += n;
                a.resize(t, pad);
                b.resize(t, pad);
                (a, b, m)
            }
            _ => {
                input_tokens += data.row_len(rows[i]);
                (ri, rt, rm)
            }
        };
        inp.extend(ri.into_iter().map(|x| x as i64));
        tgt.extend(rt.into_iter().map(|x| x as i64));
        msk.extend(rm);
    }
    let batch = Batch::from_host(inp, tgt, msk, [rows.len(), t], input_tokens, None, device);
    let sampled = batch.real_tokens;
    Rollout { batch, timing, sampled }
}
