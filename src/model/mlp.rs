//! SwiGLU feed-forward: down(silu(gate(x)) * up(x)).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct SwiGlu {
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

impl SwiGlu {
    pub fn new(d_model: usize, d_ff: usize, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        SwiGlu { w_gate: lin(d_model, d_ff), w_up: lin(d_model, d_ff), w_down: lin(d_ff, d_model) }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.w_down.forward(silu(self.w_gate.forward(x.clone())) * self.w_up.forward(x))
    }
}
