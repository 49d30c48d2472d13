//! `distill bench-train`: a recipe's own training loop timed step by step (the run's metrics
//! rows), reduced to steady tokens/s, step time, warm-up, model FLOPs utilization and peak
//! memory. The loop is the pipeline's; this module only does the arithmetic and the readings.

use serde::Serialize;

use crate::model::DecoderConfig;
use crate::train::metrics::MetricsRow;

/// Dense bf16 tensor-core peak of an H100/H200 SXM (TFLOP/s), the reference the issue and
/// PyTorch's MFU figures use for GPU runs.
pub const H100_BF16_PEAK_TFLOPS: f64 = 989.0;

#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub steps: usize,
    /// Steps left out of the steady figures (compilation, autotuning, allocator growth).
    pub warm_steps: usize,
    pub tokens_per_step: f64,
    pub tok_per_s: f64,
    pub step_ms: f64,
    /// Wall time of the first step.
    pub first_step_s: f64,
    /// The first step's excess over a steady step: compilation and autotuning.
    pub warmup_s: f64,
    pub flops_per_token: f64,
    pub tflops: f64,
    /// Against `peak_tflops`, when one is known.
    pub mfu: Option<f64>,
    pub peak_tflops: Option<f64>,
}

/// Model FLOPs of one trained token: forward and backward of the student (6 per matmul
/// parameter, and causal attention's score and value products: 2 * T * d_attn per layer
/// forward, as each query sees (T + 1) / 2 keys on average, times 3 for the backward), plus
/// the online teacher's forward (2 per parameter, 2 * T * d_attn per layer). Embedding lookups,
/// norms and the loss's softmaxes are not counted (the usual convention, as PaLM's MFU).
pub fn flops_per_token(student: &DecoderConfig, teacher: Option<&DecoderConfig>, seq_len: usize) -> f64 {
    let attn = |c: &DecoderConfig| {
        let layers = (0..c.shape.n_layers).filter(|&i| c.shape.layer_kind(i) == 'A').count();
        (2 * seq_len * c.shape.n_heads * c.head_dim() * layers) as f64
    };
    let student = 3.0 * (2.0 * student.matmul_params() as f64 + attn(student));
    let teacher = teacher.map_or(0.0, |t| 2.0 * t.matmul_params() as f64 + attn(t));
    student + teacher
}

/// Reduce the metrics rows of a benchmark run: the steady rate is measured between the end of
/// step `warm` and the end of the last step (elapsed times are cumulative).
pub fn summarize(
    rows: &[MetricsRow],
    warm: usize,
    flops_per_token: f64,
    peak_tflops: Option<f64>,
) -> Option<TrainBench> {
    let n = rows.len();
    if n < 2 {
        return None;
    }
    // Keep at least one timed step.
    let warm = warm.clamp(1, n - 1);
    let (a, b) = (&rows[warm - 1], &rows[n - 1]);
    let secs = b.elapsed_s - a.elapsed_s;
    let tokens = (b.tokens - a.tokens) as f64;
    let timed = (n - warm) as f64;
    let tok_per_s = tokens / secs;
    let step_s = secs / timed;
    let tflops = flops_per_token * tok_per_s / 1e12;
    Some(TrainBench {
        steps: n,
        warm_steps: warm,
        tokens_per_step: tokens / timed,
        tok_per_s,
        step_ms: 1e3 * step_s,
        first_step_s: rows[0].elapsed_s,
        warmup_s: (rows[0].elapsed_s - step_s).max(0.0),
        flops_per_token,
        tflops,
        mfu: peak_tflops.map(|p| tflops / p),
        peak_tflops,
    })
}

/// GPU memory this process holds now, from `nvidia-smi` (MiB). With a caching allocator
/// (LibTorch's, CubeCL's pools) that is the peak it reserved. `None` without an NVIDIA GPU.
pub fn gpu_mib_of_this_process() -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (pid, mib) = l.split_once(',')?;
        (pid.trim() == me).then(|| mib.trim().parse().ok()).flatten()
    })
}

/// The largest [`gpu_mib_of_this_process`] reading, taken every `every` on a thread of its
/// own until [`GpuPeak::stop`]. LibTorch's caching allocator keeps what it reserved until an
/// allocation fails, then frees its cache and retries: a reading at the end of a run that
/// brushed the card's limit shows less than the run needed; the sampled peak does not.
pub struct GpuPeak {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl GpuPeak {
    /// `None` where nvidia-smi does not see this process (no NVIDIA GPU).
    pub fn start(every: std::time::Duration) -> GpuPeak {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = gpu_mib_of_this_process() {
                    peak = Some(peak.map_or(m, |p| p.max(m)));
                }
                std::thread::sleep(every);
            }
            peak
        });
        GpuPeak { done, thread }
    }

    pub fn stop(self) -> Option<f64> {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelShape;

    fn row(step: usize, tokens: u64, elapsed_s: f64) -> MetricsRow {
        MetricsRow { phase: "student".into(), step, tokens, elapsed_s, ..Default::default() }
    }

    /// A first step of 10 s (compiling) followed by steps of 0.5 s of 1,000 tokens.
    #[test]
    fn steady_rate_and_warmup_from_cumulative_rows() {
        let rows: Vec<MetricsRow> = (1..=6).map(|s| row(s, 1000 * s as u64, 10.0 + 0.5 * (s - 1) as f64)).collect();
        let b = summarize(&rows, 2, 1e9, Some(100.0)).unwrap();
        assert_eq!((b.steps, b.warm_steps), (6, 2));
        assert!((b.tok_per_s - 2000.0).abs() < 1e-9, "{}", b.tok_per_s);
        assert!((b.step_ms - 500.0).abs() < 1e-9);
        assert!((b.warmup_s - 9.5).abs() < 1e-9);
        // 1 GFLOP/token at 2,000 tokens/s = 2 TFLOP/s = 2% of 100.
        assert!((b.mfu.unwrap() - 0.02).abs() < 1e-12);
        assert!(summarize(&rows[..1], 2, 1.0, None).is_none(), "one step has no steady rate");
        // Too few steps for the warm-up asked: the first step alone is left out.
        assert_eq!(summarize(&rows[..3], 5, 1.0, None).unwrap().warm_steps, 2);
    }

    /// The P1 shapes worked by hand: student d768, 12 layers, 12 heads / 4 KV (head 64),
    /// ff 2048, vocab 32,000; teacher d2048, 22 layers, 32 heads / 4 KV, ff 5632; T = 1024.
    #[test]
    fn flops_per_token_by_hand_at_the_p1_shapes() {
        let cfg = |d, l, h, kv, ff| DecoderConfig {
            vocab_size: 32_000,
            shape: ModelShape { max_seq_len: 1024, ..ModelShape::for_tests(d, l, h, kv, ff) },
        };
        let (s, t) = (cfg(768, 12, 12, 4, 2048), cfg(2048, 22, 32, 4, 5632));
        // Student per layer: q,o 768x768 each, k,v 768x256 each, MLP 3 x 768 x 2048.
        let s_layer = 2.0 * 768.0 * 768.0 + 2.0 * 768.0 * 256.0 + 3.0 * 768.0 * 2048.0;
        let s_n = 12.0 * s_layer + 768.0 * 32_000.0;
        let t_layer = 2.0 * 2048.0 * 2048.0 + 2.0 * 2048.0 * 256.0 + 3.0 * 2048.0 * 5632.0;
        let t_n = 22.0 * t_layer + 2048.0 * 32_000.0;
        let want = 6.0 * s_n + 6.0 * 1024.0 * 768.0 * 12.0 + 2.0 * t_n + 2.0 * 1024.0 * 2048.0 * 22.0;
        let got = flops_per_token(&s, Some(&t), 1024);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        let cached = flops_per_token(&s, None, 1024);
        assert!((cached - (6.0 * s_n + 6.0 * 1024.0 * 768.0 * 12.0)).abs() < 1e-6 * cached);
    }
}
