//! `distill bench-loss`: forward+backward time and peak memory of the distillation loss at
//! large vocabularies, for the three ways of computing it (one chunk, forward-only chunks, the
//! trainer's streamed loss).

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor};

use super::{peak_rss_mib, reset_peak_rss, rss_mib};
use crate::error::{Error, Result};
use crate::model::init::Init;

/// The loss modes `distill bench-loss` compares, in the order it prints them (`fused` only with
/// `--hidden`: the LM head inside the loss's chunks).
pub const MODES: [&str; 4] = ["naive", "chunked", "streamed", "fused"];

/// One distillation-loss forward+backward over `tokens` x `vocab` logits (forward KL, alpha
/// 0.5, tau 1) in this process: `naive` (one chunk), `chunked` (chunks of the forward only;
/// autodiff keeps them all until backward) or `streamed` ([`crate::kd_loss::kd_loss_streamed`]).
/// With `hidden > 0` the student's logits are `H W^T` from hidden states `(tokens, hidden)` and
/// a head `(vocab, hidden)` inside the measurement (the LM head's matmul and its backward
/// included), and `fused` is [`crate::kd_loss::kd_loss_fused_head`].
/// Returns (milliseconds, MiB above the inputs at peak): of the process's RSS on the CPU, of
/// what the GPU's caching allocator holds (its peak reservation, from nvidia-smi) on a GPU.
pub fn time_loss(
    mode: &str,
    vocab: usize,
    tokens: usize,
    chunk: usize,
    hidden: usize,
    device: &Device,
) -> Result<(f64, f64)> {
    use crate::kd_loss::{Divergence, KdConfig, Target, kd_loss_fused_head, kd_loss_streamed, kd_loss_to};
    use burn::tensor::{Int, TensorData};
    let dev = device.clone().autodiff();
    let mut init = Init::new(1, &dev);
    let student = (hidden == 0).then(|| init.normal([tokens, vocab], 2.0).inner());
    let (h, w) = match hidden {
        0 => (None, None),
        d => (Some(init.normal([tokens, d], 1.0).inner()), Some(init.normal([vocab, d], 0.1).inner())),
    };
    let teacher = init.normal([tokens, vocab], 3.0).inner();
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new((0..tokens as i64).map(|i| (i * 7919) % vocab as i64).collect::<Vec<_>>(), [tokens]),
        &dev,
    );
    let mask = Tensor::<1>::ones([tokens], &dev);
    let chunk_tokens = if mode == "naive" { tokens } else { chunk };
    let cfg = KdConfig { alpha: 0.5, temperature: 1.0, chunk_tokens, divergence: Divergence::ForwardKl };
    let t = teacher.autodiff();
    let (h, w) = (h.map(|x| x.autodiff().require_grad()), w.map(|x| x.autodiff().require_grad()));
    let _ = device.sync();
    let gpu = super::train::gpu_mib_of_this_process;
    let gpu_before = gpu();
    let before = rss_mib().unwrap_or(0.0);
    if gpu_before.is_none() && !reset_peak_rss() {
        return Err(Error::runtime("cannot reset the peak RSS (/proc/self/clear_refs)"));
    }
    let t0 = Instant::now();
    // The tensor the gradient is checked on: the logits, or the hidden states.
    let (s, out) = match (mode, &h, &w) {
        ("fused", Some(h), Some(w)) => {
            (h.clone(), kd_loss_fused_head(h.clone(), w.clone(), Some(Target::Full(t)), targets, mask, cfg))
        }
        ("fused", ..) => return Err(Error::input("bench-loss: mode `fused` needs --hidden")),
        _ => {
            let (s, leaf) = match (&student, &h, &w) {
                (Some(s), _, _) => {
                    let s = s.clone().autodiff().require_grad();
                    (s.clone(), s)
                }
                (None, Some(h), Some(w)) => (h.clone().matmul(w.clone().transpose()), h.clone()),
                _ => unreachable!("logits or hidden states"),
            };
            let out = match mode {
                "naive" | "chunked" => kd_loss_to(s, Some(Target::Full(t)), targets, mask, cfg),
                "streamed" => kd_loss_streamed(s, Some(Target::Full(t)), targets, mask, cfg),
                other => {
                    return Err(Error::input(format!(
                        "unknown loss mode `{other}` (naive, chunked, streamed or fused)"
                    )));
                }
            };
            (leaf, out)
        }
    };
    let g = s.grad(&out.total.backward()).expect("student gradient");
    let check: f32 = g.sum().into_scalar();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !check.is_finite() {
        return Err(Error::runtime("non-finite gradient"));
    }
    match gpu_before {
        Some(b) => Ok((ms, gpu().unwrap_or(b) - b)),
        None => Ok((ms, peak_rss_mib().unwrap_or(0.0) - before)),
    }
}

/// Run each (vocab, mode) of [`MODES`] in a child process `exe bench-loss --one mode:vocab` and
/// report `(vocab, mode, Some((ms, MiB above the inputs)))`; a failed child gives `None`.
pub fn sweep(
    exe: &Path,
    vocabs: &[usize],
    tokens: usize,
    chunk: usize,
    hidden: usize,
    backend: &str,
    mut report: impl FnMut(usize, &str, Option<(f64, f64)>),
) {
    for &v in vocabs {
        for mode in MODES.into_iter().filter(|m| hidden > 0 || *m != "fused") {
            let args = [
                "bench-loss",
                "--one",
                &format!("{mode}:{v}"),
                "--tokens",
                &tokens.to_string(),
                "--chunk",
                &chunk.to_string(),
                "--hidden",
                &hidden.to_string(),
                "--backend",
                backend,
            ]
            .map(String::from);
            report(v, mode, super::measure_in_child(exe, &args));
        }
    }
}
