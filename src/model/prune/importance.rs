//! The calibration pass: the decoder's blocks run step by step (the same seams as
//! `Block::forward`), summing each statistic over tokens on the way.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Int, Tensor};

use super::Importance;
use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::model::decoder::Mixer;
use crate::model::linear::{act_quant, linear};
use crate::model::norm::rms_norm;
use crate::model::rope;

/// Scores every block, FFN channel, query head and embedding channel of `model` on the
/// calibration `batches` (token ids, (batch, seq) each); see [`Importance`] for the exact
/// definitions. Runs without an autodiff graph. Attention-only models: a Mamba-2 layer is
/// refused (its heads and channels are not ranked, and a student could not be loaded).
pub fn importance(model: &Decoder, batches: &[Tensor<2, Int>]) -> Result<Importance> {
    refuse_mamba(model)?;
    // The plain backend: statistics need no gradients, and a tracked teacher would record a
    // graph for every calibration batch.
    let model = model.valid();
    let mut sums = Sums::new(&model);
    for tokens in batches {
        sums.add(&model, tokens.clone().inner());
    }
    if sums.tokens == 0 {
        return Err(Error::input("pruning calibration: expected at least one token, got none"));
    }
    Ok(sums.finish())
}

pub(super) fn refuse_mamba(model: &Decoder) -> Result<()> {
    let special = |b: &crate::model::decoder::Block| match &b.mixer {
        Mixer::Attention(a) => a.approx.is_some() || b.mlp.is_none(),
        Mixer::Mamba(_) => false,
    };
    if let Some(i) = model.blocks.iter().position(special) {
        return Err(Error::input(format!(
            "pruning: layer {i} is a Linformer, Performer or mixture-of-experts layer; pruning cuts dense \
             attention teachers (prune first, then set [student.model.moe] to upcycle)"
        )));
    }
    match model.blocks.iter().position(|b| matches!(b.mixer, Mixer::Mamba(_))) {
        Some(i) => Err(Error::input(format!(
            "pruning: layer {i} is a Mamba-2 layer (layer_pattern {:?}); only attention layers have heads and \
             channels this pruning ranks, and Mamba-2 students cannot be loaded from sliced weights",
            model.config.shape.layer_pattern
        ))),
        None => Ok(()),
    }
}

/// Running sums over tokens of every statistic, in f64 on the host.
pub(super) struct Sums {
    cos: Vec<f64>,
    ffn: Vec<Vec<f64>>,
    heads: Vec<Vec<f64>>,
    embed: Vec<f64>,
    tokens: usize,
}

/// `x` (.., n) in f32, summed over every axis but the last.
fn token_sums<const D: usize>(x: Tensor<D>) -> Vec<f64> {
    let n = x.dims()[D - 1];
    let rows = x.dims().iter().product::<usize>() / n.max(1);
    let x = x.cast(DType::F32).reshape([rows, n]).sum_dim(0);
    x.into_data().convert::<f32>().iter::<f32>().map(f64::from).collect()
}

fn add(acc: &mut [f64], v: Vec<f64>) {
    acc.iter_mut().zip(v).for_each(|(a, v)| *a += v);
}

impl Sums {
    pub(super) fn new(model: &Decoder) -> Sums {
        let s = &model.config.shape;
        Sums {
            cos: vec![0.0; s.n_layers],
            ffn: vec![vec![0.0; s.d_ff]; s.n_layers],
            heads: vec![vec![0.0; s.n_heads]; s.n_layers],
            embed: vec![0.0; s.d_model],
            tokens: 0,
        }
    }

    /// One batch through the blocks; returns the residual stream after the last block (the
    /// final norm's input), which tests compare with the model's own forward pass.
    pub(super) fn add(&mut self, model: &Decoder, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let c = &model.config;
        let device = tokens.device();
        let (cos, sin) = rope::tables(t, 0, c.head_dim(), c.shape.rope_theta, c.shape.rope_scaling.as_ref(), &device);
        let mut x = model.embed.forward(tokens);
        let (cos, sin) = (cos.cast(x.dtype()), sin.cast(x.dtype()));
        for (i, block) in model.blocks.iter().enumerate() {
            let Mixer::Attention(a) = &block.mixer else { unreachable!("refused before the pass") };
            let h = rms_norm(&block.mixer_norm, x.clone());
            add(&mut self.embed, token_sums(h.clone().abs()));
            let ctx = a.context(h, &cos, &sin, None, None);
            let per_head = ctx.clone().reshape([b, t, a.n_heads, a.head_dim]).cast(DType::F32).square().sum_dim(3);
            add(&mut self.heads[i], token_sums(per_head.sqrt().reshape([b, t, a.n_heads])));
            let mid = x.clone() + linear(&a.wo, act_quant(ctx, a.act_quant));
            let h = rms_norm(&block.mlp_norm, mid.clone());
            add(&mut self.embed, token_sums(h.clone().abs()));
            let m = block.mlp.as_ref().expect("refused before the pass");
            let h = act_quant(h, m.act_quant);
            let (gate, up) = (linear(&m.w_gate, h.clone()), linear(&m.w_up, h));
            // The model's own SwiGLU kernel, so that the stream below is the model's to the bit.
            let act = match crate::kernels::cpu::silu_mul(gate, up) {
                Ok(act) => act,
                Err((gate, up)) => silu(gate) * up,
            };
            add(&mut self.ffn[i], token_sums(act.clone().abs()));
            let out = mid + linear(&m.w_down, act_quant(act, m.act_quant));
            let (xi, xo) = (x.cast(DType::F32), out.clone().cast(DType::F32));
            let dot = (xi.clone() * xo.clone()).sum_dim(2);
            let norms = (xi.square().sum_dim(2) * xo.square().sum_dim(2)).sqrt();
            // A zero stream (cos undefined) counts as cos 0 rather than a NaN.
            add(&mut self.cos[i..=i], token_sums(dot / norms.clamp_min(f32::MIN_POSITIVE)));
            x = out;
        }
        self.tokens += b * t;
        x
    }

    pub(super) fn finish(self) -> Importance {
        let n = self.tokens as f64;
        let mean = |v: Vec<f64>| v.into_iter().map(|s| s / n).collect::<Vec<f64>>();
        Importance {
            block_influence: self.cos.iter().map(|c| 1.0 - c / n).collect(),
            ffn: self.ffn.into_iter().map(mean).collect(),
            heads: self.heads.into_iter().map(mean).collect(),
            embed: mean(self.embed),
            tokens: self.tokens,
        }
    }
}
