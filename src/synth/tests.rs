//! The synth job against references: each row is what one-at-a-time generation writes from
//! its own generator, a job stopped between shards and rerun writes the same bytes, and a
//! folder written by another job is refused.

use burn::tensor::Device;

use super::shards::{SynthJob, run, shard_name};
use super::*;
use crate::generate::{Sampling, generate, row_rng};
use crate::model::DecoderConfig;

fn tiny() -> crate::model::Decoder {
    let shape = crate::recipe::PartialShape {
        d_model: Some(16),
        n_layers: Some(2),
        n_heads: Some(4),
        n_kv_heads: Some(2),
        d_ff: Some(32),
        max_seq_len: Some(48),
        ..Default::default()
    }
    .to_shape()
    .unwrap();
    DecoderConfig { vocab_size: 30, shape }.init(4, &Device::flex())
}

fn decode(t: &[u32]) -> crate::error::Result<String> {
    Ok(t.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "))
}

fn job_in<'a>(
    out: &'a std::path::Path,
    cfg: &'a SynthSection,
    model: &'a crate::model::Decoder,
    prompts: &'a [SynthPrompt],
    ids: &'a [Vec<u32>],
    dev: &'a Device,
) -> SynthJob<'a> {
    SynthJob {
        cfg,
        seed: 9,
        model,
        teacher: serde_json::json!({"source": "test", "sha256": "0"}),
        prompts,
        ids,
        stops: &[29],
        decode: &decode,
        out,
        device: dev,
        quiet: true,
        stop_after_shards: None,
    }
}

fn read_shards(dir: &std::path::Path, n: usize) -> Vec<u8> {
    (0..n).flat_map(|k| std::fs::read(dir.join(shard_name(k))).unwrap()).collect()
}

#[test]
fn synth_rows_resume_and_identity() {
    let dev = Device::flex();
    let model = tiny();
    let base = std::env::temp_dir().join(format!("distill-synth-{}", std::process::id()));
    let ids: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4], vec![5, 6, 7, 8, 9], vec![10, 11], vec![12]];
    let prompts: Vec<SynthPrompt> = (0..ids.len()).map(|i| SynthPrompt::Text { text: format!("p{i}") }).collect();
    let cfg = SynthSection {
        samples_per_prompt: 2,
        max_new_tokens: 7,
        temperature: 1.0,
        top_p: 0.9,
        batch_size: 3,
        shard_rows: 4,
        ..Default::default()
    };
    // Uninterrupted.
    let full = base.join("full");
    let report = run(&job_in(&full, &cfg, &model, &prompts, &ids, &dev), &mut |_| {}).unwrap();
    assert_eq!((report.rows, report.shards, report.kept_shards), (10, 3, 0));
    let bytes = read_shards(&full, 3);
    // Every row is prompt g / 2's continuation drawn alone from row g's generator.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 10);
    for (g, row) in rows.iter().enumerate() {
        let s = Sampling { seed: row_rng(9, g as u64).0, ..cfg.sampling(9) };
        let want = decode(&generate(&model, &ids[g / 2], 29, &s, &dev, |_| {})).unwrap();
        assert_eq!(row["completion"], want.as_str(), "row {g}");
        assert_eq!(row["prompt"], format!("p{}", g / 2).as_str());
        assert_eq!(row["provenance"]["row"], g);
        assert_eq!(row["provenance"]["sample"], g % 2);
        assert_eq!(row["provenance"]["teacher"]["source"], "test");
    }
    // Stopped after one shard, then rerun: the same bytes, the first shard kept.
    let cut = base.join("cut");
    let mut j = job_in(&cut, &cfg, &model, &prompts, &ids, &dev);
    j.stop_after_shards = Some(1);
    assert!(matches!(run(&j, &mut |_| {}), Err(crate::error::Error::Interrupted(_))));
    assert!(cut.join(shard_name(0)).is_file() && !cut.join(shard_name(1)).is_file());
    j.stop_after_shards = None;
    let again = run(&j, &mut |_| {}).unwrap();
    assert_eq!(again.kept_shards, 1);
    assert!(read_shards(&cut, 3) == bytes, "a resumed job writes what an uninterrupted one does");
    // Another job's folder is refused, naming the difference.
    let other = SynthSection { temperature: 0.5, ..cfg.clone() };
    let e = run(&job_in(&full, &other, &model, &prompts, &ids, &dev), &mut |_| {}).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("differs in `settings.temperature`"), "{e}");
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn chat_prompts_end_at_the_first_user_turn() {
    let m = |r: &str, c: &str| Message { role: r.into(), content: c.into(), extra: Default::default() };
    let conv = [m("system", "s"), m("user", "u1"), m("assistant", "a1"), m("user", "u2")];
    assert_eq!(chat_prompt(&conv).unwrap(), conv[..2].to_vec());
    assert!(chat_prompt(&conv[..1]).is_err());
    let row = output_row(&SynthPrompt::Chat { messages: conv[..2].to_vec() }, "ans", serde_json::json!({}));
    assert_eq!(row["messages"][2], serde_json::json!({"role": "assistant", "content": "ans"}));
    assert_eq!(SynthSection { shard_rows: 0, ..Default::default() }.check().unwrap_err().0, "shard_rows");
}
