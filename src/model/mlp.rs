//! SwiGLU feed-forward: down(silu(gate(x)) * up(x)).

use super::linear::{act_quant, linear};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::init::Init;

#[derive(Module, Debug)]
pub struct SwiGlu {
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
    /// Fake-quantize the projections' inputs to int8 per token (`[qat] activations`).
    pub act_quant: bool,
}

impl SwiGlu {
    /// `prefix`: the Hugging Face name, e.g. `model.layers.0.mlp`.
    pub fn new(prefix: &str, d_model: usize, d_ff: usize, init: &mut Init) -> Self {
        SwiGlu {
            w_gate: init.named_linear(&format!("{prefix}.gate_proj"), d_model, d_ff, false),
            w_up: init.named_linear(&format!("{prefix}.up_proj"), d_model, d_ff, false),
            w_down: init.named_linear(&format!("{prefix}.down_proj"), d_ff, d_model, false),
            act_quant: false,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = act_quant(x, self.act_quant);
        let (gate, up) = (linear(&self.w_gate, x.clone()), linear(&self.w_up, x));
        // One fused pass on the CPU route; burn's composition elsewhere.
        let h = match crate::kernels::cpu::silu_mul(gate, up) {
            Ok(h) => h,
            Err((gate, up)) => silu(gate) * up,
        };
        linear(&self.w_down, act_quant(h, self.act_quant))
    }
}
