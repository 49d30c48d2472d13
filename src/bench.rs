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
            let a = Attention::new("bench", d, cfg.n_heads, cfg.n_kv_heads, false, false, None, &mut init);
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

/// One line of the cache benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheBenchRow {
    pub k: usize,
    pub values: crate::recipe::ValueCodec,
    pub bytes_per_token: f64,
    pub kl_online: f64,
    /// Relative error of the mean forward KL from the cache, "other" bucket and renormalized.
    pub rel_err_other: f64,
    pub rel_err_renormalize: f64,
    /// Tokens per second the reader decodes into loss targets (one thread).
    pub read_tok_per_s: f64,
}

/// Build caches of the first `rows` training rows of a finished run for each (k, codec), and
/// measure size, the KL error against the full teacher (the run's own student as the other
/// side) and the reader's speed.
pub fn cache_sweep(run_dir: &std::path::Path, ks: &[usize], codecs: &[crate::recipe::ValueCodec], rows: usize,
    mut report: impl FnMut(&CacheBenchRow)) -> Result<Vec<CacheBenchRow>> {
    use crate::recipe::TailMode;
    use crate::teacher::cache::{self, CacheIdentity, CacheReader};
    let recipe = crate::pipeline::load_run_recipe(run_dir)?;
    let prepared = crate::data::load_prepared(run_dir)?;
    let seq = recipe.data.seq_len;
    let data = crate::data::pack::Packed::build(prepared.train, seq, prepared.tokenizer.eos_id, recipe.data.packing);
    let data = data.prefix(rows.min(data.n_rows()));
    let dev = Device::flex();
    let load = |w: &str| crate::model::store::load(&run_dir.join(w).join("final"), &dev).map(|m| m.0);
    let (teacher, student) = (load("teacher")?, load("student")?);
    let all: Vec<usize> = (0..data.n_rows()).collect();
    let logits_of = |m: &crate::model::Decoder| -> Vec<f32> {
        let f = cache::decoder_logits(m, &data, &dev);
        all.chunks(16).flat_map(f).collect()
    };
    let (tl, sl) = (logits_of(&teacher), logits_of(&student));
    let tau = recipe.distill.temperature;
    let scratch = run_dir.join("bench-cache");
    let mut out = Vec::new();
    for &k in ks {
        for &values in codecs {
            let _ = std::fs::remove_dir_all(&scratch);
            let id = CacheIdentity {
                format_version: cache::FORMAT_VERSION, vocab_size: teacher.config.vocab_size, k: k.min(teacher.config.vocab_size),
                values, temperatures: vec![tau], seq_len: seq, n_rows: data.n_rows(), rows_per_shard: 1024,
                tokenizer_hash: String::new(), teacher_hash: String::new(), teacher_dtype: String::new(), data_hash: String::new(),
            };
            let v = id.vocab_size;
            let stop = std::sync::atomic::AtomicBool::new(false);
            let tl_ref = &tl;
            let logits_of = |rs: &[usize]| rs.iter().flat_map(|&r| tl_ref[r * seq * v..(r + 1) * seq * v].to_vec()).collect();
            let m = cache::build(&scratch, &id, &data, cache::host_select(logits_of, &data, &id),
                &cache::BuildOptions { batch_size: 16, quiet: true, stop: &stop, teacher: Default::default() })?;
            let expect = cache::Expect { vocab_size: v, seq_len: seq, n_rows: id.n_rows, tokenizer_hash: "", teacher_hash: "", teacher_dtype: "", data_hash: "" };
            let reader = CacheReader::open(&scratch, &expect)?;
            let d = crate::kd_loss::Divergence::ForwardKl;
            let (on, other) = cache::divergence_online_and_cached(&reader, &data, &all, &tl, &sl, tau, TailMode::Other, d)?;
            let (_, renorm) = cache::divergence_online_and_cached(&reader, &data, &all, &tl, &sl, tau, TailMode::Renormalize, d)?;
            let t0 = Instant::now();
            let mut tokens = 0usize;
            while t0.elapsed().as_secs_f64() < 1.0 {
                for c in all.chunks(16) {
                    let h = reader.batch(c, tau, TailMode::Other)?;
                    tokens += c.iter().map(|&r| data.row_len(r)).sum::<usize>();
                    std::hint::black_box(h);
                }
            }
            let row = CacheBenchRow {
                k: id.k, values, bytes_per_token: m.bytes_per_token(), kl_online: on,
                rel_err_other: (other - on).abs() / on, rel_err_renormalize: (renorm - on).abs() / on,
                read_tok_per_s: tokens as f64 / t0.elapsed().as_secs_f64(),
            };
            report(&row);
            out.push(row);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}

/// Bytes per token of the record format at a large vocabulary, on synthetic LM-like logits
/// (a handful of strong candidates over noise; the kept ids are then close to uniformly spread,
/// the worst case for the id code): the size side of the comparison with other formats.
pub fn cache_record_bytes(vocab: usize, k: usize, codec: crate::recipe::ValueCodec, tokens: usize) -> f64 {
    use crate::teacher::bits::BitWriter;
    let mut rng = crate::rng::SplitMix(vocab as u64 ^ k as u64);
    let mut total = 0usize;
    let mut z = vec![0f32; vocab];
    for _ in 0..tokens {
        for x in z.iter_mut() {
            *x = ((rng.uniform() + rng.uniform() + rng.uniform() - 1.5) * 2.0) as f32;
        }
        for _ in 0..8 {
            z[rng.below(vocab)] += 6.0 + 3.0 * rng.uniform() as f32;
        }
        let mut w = BitWriter::default();
        crate::teacher::cache::encode_token(&mut w, &z, k, codec, &[1.0]);
        w.align();
        total += w.bytes.len();
    }
    total as f64 / tokens as f64
}

/// Reset this process's peak resident memory to its current size (Linux `clear_refs` 5), so
/// that a later [`peak_rss_mib`] measures what came after.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One distillation-loss forward+backward over `tokens` x `vocab` logits (forward KL, alpha
/// 0.5, tau 1) in this process: `naive` (one chunk), `chunked` (chunks of the forward only;
/// autodiff keeps them all until backward) or `streamed` ([`crate::kd_loss::kd_loss_streamed`]).
/// Returns (milliseconds, MiB above the inputs at peak).
pub fn time_loss(mode: &str, vocab: usize, tokens: usize, chunk: usize) -> Result<(f64, f64)> {
    use crate::kd_loss::{Divergence, KdConfig, Target, kd_loss_streamed, kd_loss_to};
    use burn::tensor::{Int, TensorData};
    let dev = Device::flex().autodiff();
    let mut init = Init::new(1, &dev);
    let student = init.normal([tokens, vocab], 2.0).inner();
    let teacher = init.normal([tokens, vocab], 3.0).inner();
    let targets = Tensor::<1, Int>::from_data(TensorData::new((0..tokens as i64).map(|i| (i * 7919) % vocab as i64).collect::<Vec<_>>(), [tokens]), &dev);
    let mask = Tensor::<1>::ones([tokens], &dev);
    let chunk_tokens = if mode == "naive" { tokens } else { chunk };
    let cfg = KdConfig { alpha: 0.5, temperature: 1.0, chunk_tokens, divergence: Divergence::ForwardKl };
    let s = student.autodiff().require_grad();
    let t = teacher.autodiff();
    let before = rss_mib().unwrap_or(0.0);
    if !reset_peak_rss() {
        return Err(Error::runtime("cannot reset the peak RSS (/proc/self/clear_refs)"));
    }
    let t0 = Instant::now();
    let out = match mode {
        "naive" | "chunked" => kd_loss_to(s.clone(), Some(Target::Full(t)), targets, mask, cfg),
        "streamed" => kd_loss_streamed(s.clone(), Some(Target::Full(t)), targets, mask, cfg),
        other => return Err(Error::input(format!("unknown loss mode `{other}` (naive, chunked or streamed)"))),
    };
    let g = s.grad(&out.total.backward()).expect("student gradient");
    let check: f32 = g.sum().into_scalar();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !check.is_finite() {
        return Err(Error::runtime("non-finite gradient"));
    }
    Ok((ms, peak_rss_mib().unwrap_or(0.0) - before))
}
