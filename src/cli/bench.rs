//! The benchmark commands: `bench` (layers), `bench-cache` (the teacher cache), `bench-loss`
//! (the distillation loss) and `bench-train` (a recipe's training loop). The measurements live in [`crate::bench`]; here are
//! the flag checks and the printed tables.

use super::flags::flag;
use super::{BenchArgs, BenchAttentionArgs, BenchCacheArgs, BenchLossArgs, BenchTrainArgs, say, stop_flag};
use crate::bench::{
    self,
    cache::{cache_record_bytes, cache_sweep, trainer_tok_per_s},
    layers::LayerBench,
};
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::pipeline::{self, RunOptions};
use crate::recipe::Recipe;
use crate::teacher::codec::ValueCodec;

pub(super) fn layers(a: BenchArgs) -> Result<()> {
    let BenchArgs { seq, d_model, n_heads, n_kv_heads, batch, reps, jsonl, kinds, one } = a;
    if let Some(k) = kinds.iter().find(|k| !bench::layers::KINDS.contains(&k.as_str())) {
        return Err(Error::input(format!(
            "--kinds: unknown layer `{k}`; expected {}",
            bench::layers::KINDS.join(", ")
        )));
    }
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || d_model % n_heads != 0 {
        return Err(Error::input(format!(
            "--n-heads ({n_heads}) must divide --d-model ({d_model}) and be a multiple of --n-kv-heads ({n_kv_heads})"
        )));
    }
    let cfg = LayerBench { d_model, n_heads, n_kv_heads, batch, reps: reps.max(1) };
    if let Some(one) = one {
        // The measuring child of `sweep`: one number pair on stdout.
        let (kind, t) = one.split_once(':').ok_or_else(|| Error::input("--one kind:seq"))?;
        let t: usize = t.parse().map_err(|_| Error::input("--one kind:seq"))?;
        let ms = bench::layers::time_layer(kind, t, cfg)?;
        println!("{ms} {}", bench::peak_rss_mib().unwrap_or(0.0));
        return Ok(());
    }
    let exe = bench::current_exe()?;
    println!("forward+backward of one layer, batch {batch}, d_model {d_model}, burn flex f32 (median of {reps})");
    println!("{:<14} {:>7} {:>12} {:>12}", "layer", "seq", "ms", "peak MiB");
    let mut lines = String::new();
    bench::layers::sweep(&exe, &kinds, &seq, cfg, |kind, t, r| match r {
        Some((ms, mib)) => {
            println!("{kind:<14} {t:>7} {ms:>12.1} {mib:>12.0}");
            lines += &format!(
                "{}\n",
                serde_json::json!({"layer": kind, "seq": t, "ms": ms, "peak_mib": mib,
                "d_model": d_model, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "batch": batch})
            );
        }
        None => println!("{kind:<14} {t:>7} {:>12} {:>12}", "failed", "-"),
    });
    println!("\nKV cache per token, f32, a 32-layer d_model 4096 model with 32 query heads:");
    for (name, bytes) in bench::layers::kv_cache_table() {
        println!("  {name:<18} {:>8} KiB", bytes / 1024);
    }
    if let Some(p) = jsonl {
        bench::append_jsonl(&p, &lines)?;
    }
    Ok(())
}

pub(super) fn attention(a: BenchAttentionArgs) -> Result<()> {
    use crate::bench::attention::{AttnShape, time_attention};
    use crate::model::config::AttentionImpl;
    let BenchAttentionArgs { seq, head_dim, tokens, d_model, group, window, backend, dtype, r#impl, warm, reps, jsonl } =
        a;
    let device = super::flags::backend_device(&backend)?;
    // FlashAttention's benchmark shapes on a GPU; on the CPU a size that ends in minutes.
    let cpu = backend == "cpu";
    let seq = match (seq.is_empty(), cpu) {
        (false, _) => seq,
        (true, true) => vec![256, 512, 1024, 2048],
        (true, false) => vec![512, 1024, 2048, 4096, 8192, 16384],
    };
    let tokens = tokens.unwrap_or(if cpu { 2048 } else { 16384 });
    let d_model = d_model.unwrap_or(if cpu { 256 } else { 2048 });
    let dt = flag::<crate::recipe::TeacherDtype>("--dtype", &dtype)?.dtype();
    let imp = flag::<AttentionImpl>("--impl", &r#impl)?;
    if let Some(hd) = head_dim.iter().find(|&&hd| hd == 0 || hd % 2 == 1 || d_model % (hd * group.max(1)) != 0) {
        return Err(Error::input(format!(
            "--head-dim {hd}: must be even and divide --d-model ({d_model}) into a multiple of --group ({group}) heads"
        )));
    }
    if tokens == 0 || group == 0 || seq.contains(&0) || window == Some(0) {
        return Err(Error::input("--tokens, --group, --seq and --window must be positive"));
    }
    println!(
        "attention forward+backward, {tokens} tokens a batch, d_model {d_model}, {} query heads per KV head, {}, {backend} {dtype}, {} (mean of {reps} after {warm})",
        group,
        window.map_or("causal".to_string(), |w| format!("causal, window {w}")),
        r#impl
    );
    #[cfg(feature = "tch")]
    if backend == "libtorch" && imp.is_fused() {
        let k = crate::kernels::torch::kernel_for(0, window);
        println!("GPU kernel: {k:?} (cuDNN's for causal attention; DISTILL_GPU_ATTENTION=flash: FlashAttention-2)");
    }
    println!("{:>5} {:>7} {:>6} {:>6} {:>10} {:>9}", "hd", "seq", "batch", "heads", "ms", "TFLOP/s");
    let mut lines = String::new();
    for &hd in &head_dim {
        for &t in &seq {
            let heads = d_model / hd;
            let s =
                AttnShape { batch: (tokens / t).max(1), heads, kv_heads: heads / group, seq: t, head_dim: hd, window };
            let ms = time_attention((&device, cpu), dt, s, imp, warm, reps)?;
            let tflops = s.flops() / (ms * 1e-3) / 1e12;
            println!("{hd:>5} {t:>7} {:>6} {heads:>6} {ms:>10.3} {tflops:>9.3}", s.batch);
            lines += &format!(
                "{}\n",
                serde_json::json!({"impl": r#impl, "backend": backend, "dtype": dtype, "head_dim": hd, "seq": t,
                "batch": s.batch, "heads": heads, "kv_heads": s.kv_heads, "window": window, "ms": ms,
                "tflops": tflops})
            );
        }
    }
    if let Some(p) = jsonl {
        bench::append_jsonl(&p, &lines)?;
    }
    Ok(())
}

pub(super) fn cache(a: BenchCacheArgs) -> Result<()> {
    let BenchCacheArgs { run_dir, k, values, rows, jsonl } = a;
    let codecs = values.iter().map(|v| flag::<ValueCodec>("--values", v)).collect::<Result<Vec<_>>>()?;
    if k.contains(&0) || rows == 0 {
        return Err(Error::input("--k and --rows must be positive"));
    }
    let trainer = trainer_tok_per_s(&run_dir);
    println!(
        "top-k teacher cache on {} ({rows} training rows): forward KL(teacher || student) error vs the full teacher",
        run_dir.display()
    );
    println!(
        "{:>5} {:>6} {:>11} {:>10} {:>14} {:>14} {:>12}",
        "k", "values", "bytes/tok", "KL", "err (other)", "err (renorm)", "read tok/s"
    );
    let mut lines = String::new();
    cache_sweep(&run_dir, &k, &codecs, rows, |r| {
        println!(
            "{:>5} {:>6} {:>11.1} {:>10.4} {:>13.3}% {:>13.3}% {:>12.0}",
            r.k,
            format!("{:?}", r.values).to_lowercase(),
            r.bytes_per_token,
            r.kl_online,
            100.0 * r.rel_err_other,
            100.0 * r.rel_err_renormalize,
            r.read_tok_per_s
        );
        lines += &format!("{}\n", serde_json::json!(r));
    })?;
    println!("student trainer consumption in this run: {trainer:.0} tok/s (one reader thread decodes ahead of it)");
    println!("\nrecord size at large vocabularies (synthetic logits, k = 128, one temperature):");
    for v in [32_000usize, 128_256] {
        let sizes: Vec<String> = codecs
            .iter()
            .map(|&c| format!("{:?} {:.1}", c, cache_record_bytes(v, 128, c, 200)).to_lowercase())
            .collect();
        println!("  vocab {v:>7}: {} bytes/token", sizes.join(", "));
    }
    if let Some(p) = jsonl {
        bench::append_jsonl(&p, &lines)?;
    }
    Ok(())
}

pub(super) fn loss(a: BenchLossArgs) -> Result<()> {
    let BenchLossArgs { vocab, tokens, chunk, hidden, backend, one } = a;
    let device = super::flags::backend_device(&backend)?;
    if tokens == 0 || chunk == 0 || vocab.contains(&0) {
        return Err(Error::input("--tokens, --chunk and --vocab must be positive"));
    }
    if let Some(one) = one {
        // The measuring child of `sweep`: one number pair on stdout.
        let (mode, v) = one.split_once(':').ok_or_else(|| Error::input("--one mode:vocab"))?;
        let v: usize = v.parse().map_err(|_| Error::input("--one mode:vocab"))?;
        let (ms, mib) = bench::loss::time_loss(mode, v, tokens, chunk, hidden, &device)?;
        println!("{ms} {mib}");
        return Ok(());
    }
    let exe = bench::current_exe()?;
    let on = match backend.as_str() {
        "cpu" => "burn flex f32, peak RSS".to_string(),
        b => format!("{b} f32, GPU memory the caching allocator held"),
    };
    println!("distillation loss forward+backward, {tokens} tokens, forward KL, chunks of {chunk} ({on}, one run each)");
    println!("{:>8} {:>10} {:>10} {:>16} {:>14}", "vocab", "mode", "ms", "peak MiB (+)", "[tokens,vocab]");
    if hidden > 0 {
        println!(
            "the student's logits are H W^T (hidden {hidden}) inside the measurement; `fused`: the head in the chunks"
        );
    }
    bench::loss::sweep(&exe, &vocab, tokens, chunk, hidden, &backend, |v, mode, r| {
        // The size of one [tokens, vocab] f32 tensor, to read the peaks against.
        let one = (tokens * v * 4) as f64 / (1 << 20) as f64;
        match r {
            Some((ms, mib)) => println!("{v:>8} {mode:>10} {ms:>10.0} {mib:>16.0} {one:>13.0}M"),
            None => println!("{v:>8} {mode:>10} {:>10} {:>16}", "failed", "-"),
        }
    });
    Ok(())
}

pub(super) fn train(a: BenchTrainArgs) -> Result<()> {
    let BenchTrainArgs { recipe, steps, warm, peak_tflops, jsonl } = a;
    if steps < 2 {
        return Err(Error::input(format!("--steps: expected at least 2 (one to warm up, one to time), got {steps}")));
    }
    let base = Recipe::load(&recipe.recipe, &recipe.set)?;
    // The benchmark's own run directory and length; the user's --set still wins.
    let mut set = vec![
        format!("run.name={}-bench", base.run.name),
        format!("optim.steps={steps}"),
        format!("optim.warmup_steps={}", base.optim.warmup_steps.min(steps)),
        format!("checkpoint.every_steps={steps}"),
        format!("eval.every_steps={steps}"),
    ];
    set.extend(recipe.set.iter().cloned());
    let r = Recipe::load(&recipe.recipe, &set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: true };
    let started = std::time::Instant::now();
    let sampler = bench::train::GpuPeak::start(std::time::Duration::from_millis(250));
    let run = pipeline::bench_train(&r, &opts, &mut say);
    let gpu_peak = sampler.stop();
    let run = run?;
    // Everything before the first step: data, the teacher's load and the student's build.
    let setup_s = started.elapsed().as_secs_f64() - run.rows.last().map_or(0.0, |r| r.elapsed_s);
    let peak = peak_tflops.or(match r.run.backend {
        Backend::Cpu | Backend::LibtorchCpu => None,
        _ => Some(bench::train::H100_BF16_PEAK_TFLOPS),
    });
    let fpt = bench::train::flops_per_token(&run.student, run.online_teacher.as_ref(), run.seq_len);
    let b = bench::train::summarize(&run.rows, warm, fpt, peak)
        .ok_or_else(|| Error::runtime("bench-train: fewer than two steps were recorded"))?;
    let host = bench::peak_rss_mib();
    let gpu = bench::train::gpu_mib_of_this_process();
    let teacher = if run.online_teacher.is_some() { "online teacher" } else { "cached teacher" };
    println!(
        "bench-train {}: {:?}, {:?} precision, {teacher}, {} x {} tokens/step, activation checkpointing {:?}, {} steps ({} warm-up)",
        recipe.recipe.display(),
        r.run.backend,
        r.run.precision,
        r.optim.batch_size * r.optim.grad_accum,
        r.data.seq_len,
        r.run.activation_checkpointing,
        b.steps,
        b.warm_steps
    );
    println!("  tokens/s        {:>10.0}", b.tok_per_s);
    println!("  step            {:>10.1} ms", b.step_ms);
    println!("  model TFLOP/s   {:>10.1}  ({:.3} GFLOP/token)", b.tflops, b.flops_per_token / 1e9);
    match (b.mfu, b.peak_tflops) {
        (Some(m), Some(p)) => println!("  MFU             {:>9.1}%  (of {p:.0} TFLOP/s)", 100.0 * m),
        _ => println!("  MFU                      -  (no peak given: --peak-tflops)"),
    }
    println!("  first step      {:>10.1} s  (warm-up {:.1} s beyond a steady step)", b.first_step_s, b.warmup_s);
    println!("  setup           {setup_s:>10.1} s  (outside the steps: data, teacher load, student build)");
    println!("  host peak RSS   {:>10.0} MiB", host.unwrap_or(f64::NAN));
    if let (Some(g), Some(p)) = (gpu, gpu_peak) {
        println!("  GPU memory peak {:>10.0} MiB  (nvidia-smi every 0.25 s; {g:.0} MiB held at the end)", p.max(g));
    }
    if let Some(p) = jsonl {
        let mut v = serde_json::to_value(&b).map_err(|e| Error::runtime(e.to_string()))?;
        v["recipe"] = recipe.recipe.display().to_string().into();
        v["backend"] = format!("{:?}", r.run.backend).into();
        v["precision"] = format!("{:?}", r.run.precision).into();
        v["host_peak_mib"] = host.into();
        v["batch"] = (r.optim.batch_size * r.optim.grad_accum).into();
        v["seq_len"] = r.data.seq_len.into();
        v["activation_checkpointing"] = serde_json::to_value(r.run.activation_checkpointing).unwrap_or_default();
        v["gpu_mib"] = gpu.into();
        v["gpu_peak_mib"] = gpu_peak.zip(gpu).map(|(p, g)| p.max(g)).into();
        v["setup_s"] = setup_s.into();
        bench::append_jsonl(&p, &format!("{v}\n"))?;
    }
    Ok(())
}

/// `distill bench-generate`: one warm-up batch, then `--repeat` timed ones; prints the best as
/// a JSON line (tokens/s over the generated tokens, and the split).
pub(super) fn generate(a: super::BenchGenerateArgs) -> Result<()> {
    use crate::generate::{Sampling, generate_batch, row_rng};
    let device = super::flags::backend_device(&a.backend)?;
    let dtype = super::flags::flag::<crate::recipe::TeacherDtype>("--dtype", &a.dtype)?.dtype();
    if a.batch == 0 || a.new_tokens == 0 || a.prompt_len == 0 {
        return Err(Error::input("--batch, --prompt-len and --new-tokens: expected at least 1"));
    }
    // Rows are allocated before the model's context can bound them.
    const MAX_ROWS: usize = 4096;
    if a.batch > MAX_ROWS || a.check > MAX_ROWS {
        return Err(Error::input(format!("--batch and --check: expected at most {MAX_ROWS} rows")));
    }
    let m = super::probes::open_model(&a.model, false, &device, dtype)?.cast(dtype);
    let (v, ctx) = (m.config.vocab_size, m.config.shape.max_seq_len);
    if a.prompt_len + a.new_tokens > ctx {
        return Err(Error::input(format!(
            "--prompt-len + --new-tokens ({}) exceed the model's context ({ctx})",
            a.prompt_len + a.new_tokens
        )));
    }
    let mut rng = crate::rng::SplitMix(a.seed);
    let prompts: Vec<Vec<u32>> =
        (0..a.batch).map(|_| (0..a.prompt_len).map(|_| rng.below(v) as u32).collect()).collect();
    let s = Sampling { temperature: a.temperature, top_k: 0, top_p: 1.0, seed: a.seed, max_tokens: a.new_tokens };
    let mut best: Option<(f64, crate::generate::Timing)> = None;
    for rep in 0..=a.repeat {
        let rngs = (0..a.batch as u64).map(|i| row_rng(a.seed, i)).collect();
        let clock = std::time::Instant::now();
        let (rows, t) = generate_batch(&m, &prompts, rngs, &[], &s, &device);
        let wall = clock.elapsed().as_secs_f64();
        assert!(rows.iter().all(|r| r.tokens.len() == a.new_tokens), "no stop ids: every row runs to the limit");
        if rep > 0 && best.as_ref().is_none_or(|(w, _)| wall < *w) {
            best = Some((wall, t));
        }
    }
    let (wall, t) = best.expect("at least one timed repetition");
    let generated = a.batch * a.new_tokens;
    let check = (a.check > 0).then(|| {
        // Left-padded rows against each prompt alone: the tokens agree until the first
        // position where rounding flips a near-tie (bf16), and exactly in f32.
        let ragged: Vec<Vec<u32>> = (0..a.check)
            .map(|_| {
                let n = a.prompt_len / 4 + rng.below(a.prompt_len - a.prompt_len / 4 + 1);
                (0..n.max(1)).map(|_| rng.below(v) as u32).collect()
            })
            .collect();
        let g = Sampling { temperature: 0.0, max_tokens: a.check_tokens, ..s };
        let rngs = (0..a.check as u64).map(|i| row_rng(0, i)).collect();
        let (rows, _) = generate_batch(&m, &ragged, rngs, &[], &g, &device);
        let alone: Vec<Vec<u32>> =
            ragged.iter().map(|p| crate::generate::generate(&m, p, u32::MAX, &g, &device, |_| {})).collect();
        let same = rows.iter().zip(&alone).filter(|(r, a)| &r.tokens == *a).count();
        let agree: usize = rows
            .iter()
            .zip(&alone)
            .map(|(r, a)| r.tokens.iter().zip(a).take_while(|(x, y)| x == y).count())
            .sum();
        serde_json::json!({"rows": a.check, "identical_rows": same, "agreeing_prefix": agree as f64 / (a.check * a.check_tokens) as f64})
    });
    println!(
        "{}",
        serde_json::json!({
            "bench": "generate",
            "model": a.model.display().to_string(),
            "backend": a.backend, "dtype": a.dtype,
            "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
            "temperature": a.temperature,
            "wall_s": wall,
            "tok_per_s": generated as f64 / wall,
            "prefill_s": t.prefill_s, "decode_s": t.decode_s, "sample_s": t.sample_s, "steps": t.steps,
            "ms_per_step": 1e3 * t.decode_s / t.steps.max(1) as f64,
            "batched_vs_alone": check,
        })
    );
    Ok(())
}
