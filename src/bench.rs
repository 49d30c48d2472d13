//! `distill bench`: forward+backward time and peak memory of one attention layer and one
//! Mamba-2 layer against sequence length, each measurement in a fresh child process so that
//! its peak resident memory is its own.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::attention::Attention;
use crate::model::init::Init;
use crate::model::mamba::Mamba2;
use crate::model::rope;
use crate::recipe::MambaShape;

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
        "attention" => {
            let a = Attention::new("bench", d, cfg.n_heads, cfg.n_kv_heads, false, None, &mut init);
            let (cos, sin) = rope::tables(seq, 0, d / cfg.n_heads, 10_000.0, None, &device);
            Box::new(move |x| a.forward(x, &cos, &sin, None))
        }
        "mamba" => {
            let shape = MambaShape { head_dim: 64, d_state: 64, chunk_size: 64, ..MambaShape::default() };
            let m = Mamba2::new(d, &shape, 1e-5, &mut init);
            Box::new(move |x| m.forward(x))
        }
        other => return Err(Error::input(format!("unknown layer kind `{other}` (attention or mamba)"))),
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

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Run each (kind, seq) in a child process `exe bench --one kind:seq` and collect
/// `(kind, seq, ms, peak MiB)`; a child that fails (out of memory, say) gives `None`.
pub fn sweep(exe: &std::path::Path, kinds: &[&str], seqs: &[usize], cfg: LayerBench, mut report: impl FnMut(&str, usize, Option<(f64, f64)>)) {
    for kind in kinds {
        for &seq in seqs {
            let out = Command::new(exe)
                .args(["bench", "--one", &format!("{kind}:{seq}"), "--d-model", &cfg.d_model.to_string(),
                    "--n-heads", &cfg.n_heads.to_string(), "--n-kv-heads", &cfg.n_kv_heads.to_string(),
                    "--batch", &cfg.batch.to_string(), "--reps", &cfg.reps.to_string()])
                .output();
            let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
                let s = String::from_utf8_lossy(&o.stdout).to_string();
                let mut it = s.split_whitespace().map(|v| v.parse::<f64>());
                Some((it.next()?.ok()?, it.next()?.ok()?))
            });
            report(kind, seq, parsed);
        }
    }
}
