//! `distill bench`: forward+backward time and peak memory of one attention layer and one
//! Mamba-2 layer against sequence length, and the KV-cache sizes that grouped-query attention
//! saves.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::attention::Attention;
use crate::model::config::MambaShape;
use crate::model::init::Init;
use crate::model::mamba::Mamba2;
use crate::model::rope;

/// The layer kinds `distill bench` sweeps, in the order it prints them: attention through the
/// fused kernel (`attention_impl = "fused"`) and through burn's materialized composition
/// (`"reference"`), causal Linformer (chunk 64, 8 rows), Performer (64 features, chunk 64),
/// Mamba-2; then the FFNs: dense SwiGLU of 4 d_model, and an MoE of 8 experts of 2 d_model,
/// top-2 (the same active parameters).
pub const KINDS: [&str; 7] = ["attention", "attention-ref", "linformer", "performer", "mamba", "ffn", "moe"];

#[derive(Debug, Clone, Copy)]
pub struct LayerBench {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub batch: usize,
    pub reps: usize,
}

/// Median forward+backward milliseconds of one layer at `seq` tokens (run in this process).
pub fn time_layer(kind: &str, seq: usize, cfg: LayerBench) -> Result<f64> {
    let device = Device::flex().autodiff();
    let mut init = Init::new(0, &device);
    let d = cfg.d_model;
    let x = init.normal([cfg.batch, seq, d], 1.0);
    let run: Box<dyn Fn(Tensor<3>) -> Tensor<3>> = match kind {
        "attention" | "attention-ref" => {
            let fused = kind == "attention";
            let a = Attention::new("bench", d, cfg.n_heads, cfg.n_kv_heads, false, false, None, fused, &mut init);
            let (cos, sin) = rope::tables(seq, 0, d / cfg.n_heads, 10_000.0, None, &device);
            Box::new(move |x| a.forward(x, &cos, &sin, None, None))
        }
        "linformer" | "performer" => {
            use crate::model::approx_attention::{Approx, Linformer, Performer};
            let approx = match kind {
                "linformer" => Approx::Linformer(Linformer::new(&Default::default(), &mut init)),
                _ => Approx::Performer(Performer::new(&Default::default(), d / cfg.n_heads, 0, &mut init)),
            };
            let a = Attention::new("bench", d, cfg.n_heads, cfg.n_kv_heads, false, false, None, false, &mut init)
                .with_approx(Some(approx));
            let (cos, sin) = rope::tables(seq, 0, d / cfg.n_heads, 10_000.0, None, &device);
            Box::new(move |x| a.forward(x, &cos, &sin, None, None))
        }
        "ffn" => {
            let m = crate::model::mlp::SwiGlu::new("bench", d, 4 * d, &mut init);
            Box::new(move |x| m.forward(x))
        }
        "moe" => {
            let s = crate::model::config::MoeShape {
                experts: 8,
                active: 2,
                d_ff_expert: 2 * d,
                every: 1,
                router_aux_loss: 0.01,
                upcycle_noise: 0.0,
            };
            let m = crate::model::moe::Moe::new("bench", d, &s, &mut init);
            Box::new(move |x| {
                let (y, r) = m.forward(x);
                y + r.aux.reshape([1, 1, 1])
            })
        }
        "mamba" => {
            let shape = MambaShape { head_dim: 64, d_state: 64, chunk_size: 64, ..MambaShape::default() };
            let m = Mamba2::new(d, &shape, 1e-5, &mut init);
            Box::new(move |x| m.forward(x))
        }
        other => return Err(Error::input(format!("unknown layer kind `{other}` ({})", KINDS.join(", ")))),
    };
    let mut times = Vec::new();
    for rep in 0..=cfg.reps {
        let xi = x.clone().require_grad();
        let t0 = Instant::now();
        let y = run(xi.clone());
        let grads = y.sum().backward();
        // Read a result back: a lazy backend would otherwise skip the work.
        let g: f32 = xi.grad(&grads).expect("input gradient").sum().into_scalar();
        if !g.is_finite() {
            return Err(Error::runtime(format!("{kind} at {seq} tokens: non-finite gradient")));
        }
        if rep > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Run each (kind, seq) in a child process `exe bench --one kind:seq` and report
/// `(kind, seq, Some((ms, peak MiB)))`; a child that fails (out of memory, say) gives `None`.
pub fn sweep(
    exe: &Path,
    kinds: &[&str],
    seqs: &[usize],
    cfg: LayerBench,
    mut report: impl FnMut(&str, usize, Option<(f64, f64)>),
) {
    for kind in kinds {
        for &seq in seqs {
            let args = [
                "bench",
                "--one",
                &format!("{kind}:{seq}"),
                "--d-model",
                &cfg.d_model.to_string(),
                "--n-heads",
                &cfg.n_heads.to_string(),
                "--n-kv-heads",
                &cfg.n_kv_heads.to_string(),
                "--batch",
                &cfg.batch.to_string(),
                "--reps",
                &cfg.reps.to_string(),
            ]
            .map(String::from);
            report(kind, seq, super::measure_in_child(exe, &args));
        }
    }
}

/// KV-cache bytes per token (f32) of a 32-layer, d_model 4096 model with 32 query heads (the
/// Llama-2/3-7B/8B size) for 32, 8 and 1 KV heads: the inference memory MHA, GQA and MQA cost,
/// next to the training-time numbers of [`sweep`].
pub fn kv_cache_table() -> Vec<(&'static str, usize)> {
    let shape = |kv: usize| crate::model::DecoderConfig {
        vocab_size: 32000,
        shape: crate::recipe::PartialShape {
            d_model: Some(4096),
            n_layers: Some(32),
            n_heads: Some(32),
            n_kv_heads: Some(kv),
            d_ff: Some(14336),
            ..Default::default()
        }
        .to_shape()
        .expect("complete shape"),
    };
    [("MHA (32 KV heads)", 32), ("GQA (8 KV heads)", 8), ("MQA (1 KV head)", 1)]
        .into_iter()
        .map(|(name, kv)| (name, shape(kv).kv_bytes_per_token()))
        .collect()
}
