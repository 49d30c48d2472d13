//! Decoupled weight decay by parameter group. AdamW's decay is applied here, to the matrices
//! only, and the optimizer itself runs with a decay of zero: `p <- p (1 - lr wd) - lr u` is
//! the same update burn's AdamW makes, but burn applies it to every parameter alike. As in
//! nanoGPT and mamba_ssm, norms, biases, embeddings and Mamba's `A_log`, `D` and `dt_bias` are
//! not decayed by default (`optim.no_decay`): shrinking a norm gain or `A_log` towards zero
//! changes what the layer computes rather than regularizing it.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

use serde::{Deserialize, Serialize};

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

/// Multiply every parameter outside the `exempt` groups by `factor` (= 1 - lr * weight_decay).
pub fn apply(model: Decoder, factor: f64, exempt: &[NoDecay]) -> Decoder {
    if factor == 1.0 {
        return model;
    }
    struct Decay<'a> {
        path: Vec<String>,
        factor: f64,
        exempt: &'a [NoDecay],
    }
    impl ModuleMapper for Decay<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match group(&self.path) {
                Some(g) if self.exempt.contains(&g) => p,
                _ => {
                    let f = self.factor;
                    // Outside the graph: a product of the tracked parameter would be a graph
                    // node, not a leaf, so it would get no gradient in the next step.
                    p.map(
                        |t| {
                            if t.is_require_grad() { Tensor::from_inner(t.inner() * f).require_grad() } else { t * f }
                        },
                    )
                }
            }
        }
    }
    model.map(&mut Decay { path: Vec::new(), factor, exempt })
}

/// Every parameter's path and group (what the decay test checks against its own rule).
#[cfg(test)]
pub fn groups(model: &Decoder) -> Vec<(String, Option<NoDecay>)> {
    use burn::module::ModuleVisitor;
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Option<NoDecay>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, _p: &Param<Tensor<D>>) {
            self.out.push((self.path.join("."), group(&self.path)));
        }
    }
    let mut c = Collect { path: Vec::new(), out: Vec::new() };
    model.visit(&mut c);
    c.out
}
