//! Decoupled weight decay by parameter group: the optimizer (train/adamw.rs) decays the
//! matrices only, `p <- p (1 - lr wd) - lr u`, where burn's AdamW decays every parameter alike. As in
//! nanoGPT and mamba_ssm, norms, biases, embeddings and Mamba's `A_log`, `D` and `dt_bias` are
//! not decayed by default (`optim.no_decay`): shrinking a norm gain or `A_log` towards zero
//! changes what the layer computes rather than regularizing it.

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::model::Decoder;

/// Parameter groups exempt from weight decay (`optim.no_decay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoDecay {
    /// RMSNorm gains (and Mamba-2's gated norm).
    Norm,
    /// Linear and convolution biases.
    Bias,
    /// The token embedding (also the output head when tied).
    Embedding,
    /// Mamba-2's `A_log`, `D` and `dt_bias`.
    Ssm,
}

/// The group of a parameter from its path of field names (e.g. `blocks.0.mixer_norm.gamma`),
/// or `None` for a matrix that is decayed.
pub fn group(path: &[String]) -> Option<NoDecay> {
    let leaf = path.last().map(String::as_str).unwrap_or("");
    if path.iter().any(|s| s == "embed") {
        Some(NoDecay::Embedding)
    } else if matches!(leaf, "a_log" | "d" | "dt_bias") {
        Some(NoDecay::Ssm)
    } else if matches!(leaf, "bias" | "conv_b") {
        Some(NoDecay::Bias)
    } else if leaf == "gamma" || leaf == "norm_w" {
        Some(NoDecay::Norm)
    } else {
        None
    }
}

/// Whether weight decay applies to the parameter at `path` (its group is not in `no_decay`).
pub fn decayed(path: &[String], no_decay: &[NoDecay]) -> bool {
    !group(path).is_some_and(|g| no_decay.contains(&g))
}

/// Every parameter's path and group (what the decay test checks against its own rule).
#[cfg(test)]
pub fn groups(model: &Decoder) -> Vec<(String, Option<NoDecay>)> {
    let split = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
    super::adamw::params(model).into_iter().map(|p| (p.path.clone(), group(&split(&p.path)))).collect()
}
