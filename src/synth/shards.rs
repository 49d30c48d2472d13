//! Writing teacher-made rows in shards that survive kill -9: `synth.json` records the job's
//! identity (teacher, seed, settings, prompts), each shard appears whole or not at all (written
//! aside, then renamed), and a rerun skips the shards present. A folder written by another job
//! is refused, naming what differs.

use std::path::Path;

use burn::tensor::Device;

use super::{SynthPrompt, SynthSection, output_row};
use crate::error::{Error, Result};
use crate::generate::{Stop, generate_batch, row_rng};
use crate::model::Decoder;

pub struct SynthJob<'a> {
    pub cfg: &'a SynthSection,
    pub seed: u64,
    pub model: &'a Decoder,
    /// Who writes: how the recipe names the teacher and the digest of its files.
    pub teacher: serde_json::Value,
    pub prompts: &'a [SynthPrompt],
    /// The prompts as the teacher reads them (rendered and encoded).
    pub ids: &'a [Vec<u32>],
    pub stops: &'a [u32],
    pub decode: &'a dyn Fn(&[u32]) -> Result<String>,
    pub out: &'a Path,
    pub device: &'a Device,
    pub quiet: bool,
    /// Stop (as if killed) once this many shards were written in this call: tests.
    pub stop_after_shards: Option<usize>,
}

/// What a job wrote.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SynthReport {
    pub rows: usize,
    pub shards: usize,
    /// Shards found written by an earlier call.
    pub kept_shards: usize,
    /// Tokens generated in this call.
    pub tokens: usize,
    pub generate_s: f64,
    /// Rows ended by a stop id, by `max_new_tokens`, by the teacher's context (this call).
    pub eos: usize,
    pub limit: usize,
    pub context: usize,
}

/// The job's identity, as `synth.json` holds it.
fn identity(job: &SynthJob) -> serde_json::Value {
    let mut bytes = Vec::new();
    for p in job.ids {
        bytes.extend((p.len() as u32).to_le_bytes());
        bytes.extend(p.iter().flat_map(|t| t.to_le_bytes()));
    }
    let settings = SynthSection { out: None, ..job.cfg.clone() };
    serde_json::json!({
        "teacher": job.teacher,
        "seed": job.seed,
        "settings": settings,
        "prompts": job.ids.len(),
        "prompts_sha256": crate::util::sha256_hex(&bytes),
        "rows": job.ids.len() * job.cfg.samples_per_prompt,
    })
}

/// The first top-level key (dotted one level down) where two identities differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return String::new() };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            let inner = match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x.is_object() && y.is_object() => first_difference(x, y),
                _ => String::new(),
            };
            return if inner.is_empty() { k.clone() } else { format!("{k}.{inner}") };
        }
    }
    String::new()
}

pub fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.jsonl")
}

/// Write the job's missing shards into `job.out`.
pub fn run(job: &SynthJob, log: &mut dyn FnMut(String)) -> Result<SynthReport> {
    let out = job.out;
    std::fs::create_dir_all(out).map_err(|e| Error::input(format!("{}: cannot create: {e}", out.display())))?;
    let manifest = out.join("synth.json");
    let id = identity(job);
    if manifest.is_file() {
        let old: serde_json::Value = crate::util::read_json(&manifest)?;
        if old != id {
            return Err(Error::input(format!(
                "{}: written by another synth job (it differs in `{}`): remove the folder, or set synth.out to another",
                manifest.display(),
                first_difference(&old, &id)
            )));
        }
    } else {
        crate::util::write_json_atomic(&manifest, &id)?;
    }
    let (spp, per_shard) = (job.cfg.samples_per_prompt, job.cfg.shard_rows);
    let total = job.ids.len() * spp;
    let shards = total.div_ceil(per_shard);
    let mut report = SynthReport { rows: total, shards, ..Default::default() };
    let s = job.cfg.sampling(job.seed);
    let pb = crate::util::progress_bar("synth", total as u64, job.quiet);
    let clock = std::time::Instant::now();
    let mut written = 0;
    for k in 0..shards {
        let path = out.join(shard_name(k));
        let rows = k * per_shard..((k + 1) * per_shard).min(total);
        if path.is_file() {
            report.kept_shards += 1;
            pb.inc(rows.len() as u64);
            continue;
        }
        if job.stop_after_shards.is_some_and(|n| written >= n)
            || crate::util::STOP.load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Error::Interrupted(format!(
                "synth stopped after {} of {shards} shards in {} (a rerun continues)",
                report.kept_shards + written,
                out.display()
            )));
        }
        let mut text = String::new();
        let all: Vec<usize> = rows.collect();
        for batch in all.chunks(job.cfg.batch_size) {
            let prompts: Vec<Vec<u32>> = batch.iter().map(|&g| job.ids[g / spp].clone()).collect();
            let rngs = batch.iter().map(|&g| row_rng(job.seed, g as u64)).collect();
            let (done, t) = generate_batch(job.model, &prompts, rngs, job.stops, &s, job.device);
            report.generate_s += t.prefill_s + t.decode_s;
            for (&g, d) in batch.iter().zip(done) {
                report.tokens += d.tokens.len();
                match d.stop {
                    Stop::Eos => report.eos += 1,
                    Stop::Limit => report.limit += 1,
                    Stop::Context => report.context += 1,
                }
                let provenance = serde_json::json!({
                    "teacher": job.teacher,
                    "seed": job.seed,
                    "row": g,
                    "prompt": g / spp,
                    "sample": g % spp,
                    "temperature": s.temperature,
                    "top_p": s.top_p,
                    "top_k": s.top_k,
                    "max_new_tokens": s.max_tokens,
                    "stop": d.stop,
                });
                let row = output_row(&job.prompts[g / spp], &(job.decode)(&d.tokens)?, provenance);
                text.push_str(&row.to_string());
                text.push('\n');
            }
            pb.inc(batch.len() as u64);
            pb.set_message(format!("{:.0} tok/s", report.tokens as f64 / clock.elapsed().as_secs_f64()));
        }
        crate::util::write_atomic(&path, text.as_bytes())?;
        written += 1;
    }
    pb.finish_and_clear();
    log(format!(
        "synth: {total} rows in {shards} shards in {} ({} kept from an earlier call); {} tokens generated in {:.1} s ({:.0} tok/s); stopped by EOS {}, by max_new_tokens {}, by the context {}",
        out.display(),
        report.kept_shards,
        report.tokens,
        report.generate_s,
        report.tokens as f64 / report.generate_s.max(1e-9),
        report.eos,
        report.limit,
        report.context
    ));
    Ok(report)
}
