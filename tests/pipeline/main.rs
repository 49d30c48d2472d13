//! Whole-run tests (one integration binary: each file in tests/ links the whole crate, so the
//! tests are modules of this one). Runs, resume and the CLI here; teachers, caches, curricula
//! and data in `teachers.rs`; students from trained models in `students.rs`.

mod architectures;
mod chat;
mod crash;
mod hostile;
mod students;
mod teachers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use distill::data::pack::Packed;
use distill::eval::evaluate;
use distill::model::DecoderConfig;
use distill::pipeline::{self, RunOptions};
use distill::recipe::Recipe;
use distill::train::Phase;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("distill-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run small enough for seconds on 2 cores, still with GQA in both models.
fn tiny_recipe(out: &Path, name: &str, steps: usize) -> String {
    format!(
        r#"
[run]
name = "{name}"
seed = 7
out_dir = "{out}"

[data]
synthetic_docs = 400
seq_len = 32
valid_fraction = 0.1

[tokenizer]
vocab_size = 320

[teacher.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 128
max_seq_len = 64

[teacher.optim]
lr = 1e-2
min_lr = 1e-3
warmup_steps = 5
batch_size = 8
steps = {steps}

[student.model]
d_model = 32
n_layers = 1
n_heads = 4
n_kv_heads = 1
d_ff = 64
max_seq_len = 64
tie_embeddings = true

[optim]
lr = 1e-2
min_lr = 1e-3
warmup_steps = 5
batch_size = 8
steps = {steps}

[checkpoint]
every_steps = 4
keep_last = 2

[eval]
every_steps = 4
batches = 2
"#,
        out = out.display()
    )
}

/// The entropy (nats) of the training split's token frequencies: the held-out loss of a model
/// that knows the unigram distribution and nothing else. A student that learned anything of
/// the context must be below it (ln V - 1 is not enough: unigram statistics nearly pass it).
fn unigram_entropy(run: &Path) -> f64 {
    let p = distill::data::load_prepared(run).unwrap();
    let mut counts = vec![0usize; p.meta.vocab_size];
    for &t in p.train.iter() {
        counts[t as usize] += 1;
    }
    let n = counts.iter().sum::<usize>() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let q = c as f64 / n;
            -q * q.ln()
        })
        .sum()
}

fn load(text: &str, dir: &Path) -> Recipe {
    let p = dir.join("recipe.toml");
    std::fs::write(&p, text).unwrap();
    Recipe::load(&p, &[]).unwrap()
}

fn opts(stop: &AtomicBool, stop_after: Option<(Phase, usize)>) -> RunOptions<'_> {
    RunOptions { stop, stop_after, quiet: true }
}

#[test]
fn tiny_end_to_end_run_learns_and_exports() {
    let dir = tmp("e2e");
    let recipe = load(&tiny_recipe(&dir, "e2e", 60), &dir);
    let stop = AtomicBool::new(false);
    let s = pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
    let run = dir.join("e2e");
    // The untrained student (same config and seed) is the starting point.
    let prepared = distill::data::load_prepared(&run).unwrap();
    let vocab = prepared.meta.vocab_size;
    let valid = Packed::new(prepared.valid, 32, prepared.tokenizer.eos_id);
    let dev = Device::flex();
    let init = DecoderConfig { vocab_size: vocab, shape: recipe.student.shape() }.init(1, &dev);
    let start = evaluate(&init, &valid, 8, None, &dev).loss;
    let h1 = unigram_entropy(&run);
    assert!(s.student.loss < h1 - 0.2, "student {} vs unigram entropy {h1}", s.student.loss);
    assert!(s.student.loss < 0.7 * start, "student {} vs start {start}", s.student.loss);
    assert!(s.teacher.loss < s.student.loss, "the larger teacher fits better");
    // int8 weights cost little: within 2% of the f32 loss.
    assert!((s.student_int8.loss - s.student.loss).abs() < 0.02 * s.student.loss);
    // Everything a user is promised in the run directory.
    for f in [
        "recipe.resolved.toml",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.svg",
        "summary.json",
        "data/filter_report.json",
        "teacher/final/model.json",
        "student/final/model.bpk",
        "export/model.int8.safetensors",
        "export/config.json",
        "export/tokenizer.json",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    // The int8 file holds exactly the weights that were evaluated as "student int8".
    let st = distill::teacher::hf::HfWeights::open(&run.join("export")).unwrap();
    let (w, shape) = distill::model::init::WeightSource::get(&st, "model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(shape, vec![8, 32], "HF layout [out = n_kv_heads * head_dim, in = d_model]");
    let student = distill::model::store::load(&run.join("student/final"), &dev).unwrap().0;
    let fq = distill::quant::int8::fake_quant_model(&student);
    let (want, _, _) = distill::quant::int8::linear_out_in(fq.blocks[0].linears()[1].1);
    assert!(w.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
    // Every export format from the CLI; the GGUF file, read back by `eval --exported`, has
    // exactly the perplexity of the Q4_0 round trip `--ptq` measures (the tied table is f32 in
    // both: the recipe's [qat] does not quantize it).
    let r = run.to_str().unwrap();
    for (fmt, file) in
        [("gguf-q4_0", "model.q4_0.gguf"), ("int4", "model.int4.safetensors"), ("hf", "model.safetensors")]
    {
        let out = dir.join(format!("export-{fmt}"));
        let (code, stdout, err) = distill_cmd(&["export", r, "--format", fmt, "--out", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{fmt}: {err}");
        assert!(stdout.contains(file) && out.join(file).is_file(), "{fmt}: {stdout}");
    }
    let gguf = dir.join("export-gguf-q4_0/model.q4_0.gguf");
    let (code, stdout, err) = distill_cmd(&["eval", r, "--ptq", "q4_0", "--exported", gguf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let numbers = |prefix: &str| -> String {
        let line = stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {stdout}"));
        line[prefix.len()..].trim().to_string()
    };
    assert_eq!(numbers("student q4_0 PTQ"), numbers(gguf.to_str().unwrap()), "{stdout}");
    assert_ne!(numbers("student q4_0 PTQ"), numbers("student f32"), "{stdout}");
    // The latest eval stays in the run as eval.json, with the documented keys.
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let keys = ["model", "loss", "ppl", "tokens", "kl_student", "kl_teacher", "kl_reverse", "agreement", "ece"];
    for m in ev["models"].as_array().unwrap() {
        assert!(keys.iter().all(|k| !m[*k].is_null()), "{m}");
    }
    assert_eq!(ev["models"][0]["agreement"], 1.0, "the teacher agrees with itself");
    // A checkpoint's student, and speculative decoding on two prompts (greedy).
    let (code, stdout, err) = distill_cmd(&["eval", r, "--checkpoint", "latest", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("\"checkpoint\":\"latest\""), "{stdout}");
    let (code, _, err) = distill_cmd(&["eval", r, "--checkpoint", "step-x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--checkpoint: expected `latest` or `step-N`, got `step-x`"), "{err}");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "Once upon a time\nThe cat\n").unwrap();
    let p = prompts.to_str().unwrap();
    let (code, stdout, err) = distill_cmd(&["speculative", r, "--prompts", p, "--max-tokens", "12", "--json"]);
    assert_eq!(code, 0, "{err}");
    let sp: Value = serde_json::from_str(stdout.trim()).unwrap();
    let a = sp["acceptance"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&a) && sp["prompts"] == 2 && sp["speedup"].as_f64().unwrap() > 0.0, "{sp}");
    assert!(run.join("speculative.json").is_file());
    let (code, _, err) = distill_cmd(&["speculative", r, "--prompts", p, "--draft-len", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--draft-len: expected 1 to 64 tokens, got 0"), "{err}");
    // The report holds every section; `runs` lists the run as finished.
    let (code, _, err) = distill_cmd(&["report", r]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    for id in ["recipe", "data", "plots", "eval", "exports", "speculative"] {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    assert!(page.contains("<svg") && page.contains("tokens per teacher call"));
    let (code, stdout, err) = distill_cmd(&["runs", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| run.ends_with(v["name"].as_str().unwrap()))
        .unwrap();
    assert_eq!(listed["status"], "finished", "{listed}");
    let (code, _, err) = distill_cmd(&["export", r, "--format", "gguf-q5_1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--format: expected int8, int4, hf, gguf-f16, gguf-q8_0 or gguf-q4_0, got \"gguf-q5_1\""),
        "{err}"
    );
    // A second `run` of the same recipe finds everything done and reproduces the summary.
    let again = pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
    assert_eq!(again.student.loss, s.student.loss);
    std::fs::remove_dir_all(&dir).ok();
}

fn rows(run: &Path, phase: &str) -> Vec<Value> {
    // The file as a user reads it: JSON objects, by key.
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["phase"] == phase)
        .collect()
}

/// Stopping at step k and resuming gives, at every later step up to 2k, the metrics of the
/// uninterrupted run: same data position, optimizer state and schedule.
#[test]
fn resume_matches_uninterrupted_run() {
    let dir = tmp("resume");
    let k = 6;
    let full = load(&tiny_recipe(&dir, "full", 2 * k), &dir);
    let stop = AtomicBool::new(false);
    pipeline::run(&full, &opts(&stop, None), &mut |_| {}).unwrap();

    let cut = load(&tiny_recipe(&dir, "cut", 2 * k), &dir);
    // Crash in the teacher phase, resume; crash in the student phase, resume.
    let e = pipeline::run(&cut, &opts(&stop, Some((Phase::Teacher, k))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::Error::Interrupted(_)), "{e}");
    let e = pipeline::resume(&dir.join("cut"), &opts(&stop, Some((Phase::Student, k))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::Error::Interrupted(_)), "{e}");
    let s = pipeline::resume(&dir.join("cut"), &opts(&stop, None), &mut |_| {}).unwrap();

    for phase in ["teacher", "student"] {
        let a = rows(&dir.join("full"), phase);
        let b = rows(&dir.join("cut"), phase);
        assert_eq!(a.len(), 2 * k, "{phase}");
        assert_eq!(b.len(), 2 * k, "{phase}: resumed metrics must not duplicate steps");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["step"], y["step"]);
            for key in ["loss", "ce", "kl", "grad_norm", "lr", "tokens", "eval_loss"] {
                assert_eq!(x[key], y[key], "{phase} step {}: {key}", x["step"]);
            }
        }
    }
    let s_full: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("full/summary.json")).unwrap()).unwrap();
    assert_eq!(s_full["student"]["loss"].as_f64().unwrap(), s.student.loss);
    // The newest checkpoint damaged (a flipped byte): resume says so, falls back to the one
    // before it, and still ends exactly where the uninterrupted run did.
    let fall = load(&tiny_recipe(&dir, "fall", 2 * k), &dir);
    pipeline::run(&fall, &opts(&stop, Some((Phase::Student, 8))), &mut |_| {}).unwrap_err();
    let ck = dir.join("fall/student/checkpoints/step-00000008/model.bpk");
    let mut bytes = std::fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0x40;
    std::fs::write(&ck, bytes).unwrap();
    let (code, _, err) = distill_cmd(&["resume", dir.join("fall").to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("step-00000008/model.bpk: checksum does not match MANIFEST")
            && err.contains("resuming from")
            && err.contains("step-00000004"),
        "{err}"
    );
    let (a, b) = (rows(&dir.join("full"), "student"), rows(&dir.join("fall"), "student"));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["loss"], y["loss"], "after the fallback, step {}", x["step"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn distill_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_distill")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn cli_exit_codes_and_messages() {
    let dir = tmp("cli");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, tiny_recipe(&dir, "cli", 8).replace("n_kv_heads = 2", "n_kv_heads = 3")).unwrap();
    let (code, _, err) = distill_cmd(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:19:1: key `teacher.model.n_kv_heads`: n_heads (4) must be divisible by n_kv_heads (3)"),
        "{err}"
    );
    let (code, _, err) = distill_cmd(&["validate", "no/such/recipe.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/recipe.toml: cannot read file"), "{err}");
    let good = dir.join("good.toml");
    std::fs::write(&good, tiny_recipe(&dir, "cli", 8)).unwrap();
    let (code, out, err) = distill_cmd(&["validate", good.to_str().unwrap(), "--set", "optim.lr=0.005"]);
    assert_eq!(code, 0, "{err}");
    let resolved: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(resolved["optim"]["lr"].as_float(), Some(0.005));
    assert_eq!(resolved["student"]["model"]["rope_theta"].as_float(), Some(10000.0), "defaults are printed");
    let (code, _, err) = distill_cmd(&["resume", dir.join("nothing").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a run directory"), "{err}");
    for sub in [
        "run",
        "cache-teacher",
        "resume",
        "eval",
        "export",
        "generate",
        "logits",
        "attention",
        "bench",
        "bench-train",
        "bench-loss",
        "bench-cache",
        "data",
        "validate",
        "speculative",
        "report",
        "runs",
    ] {
        let (code, out, _) = distill_cmd(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage: distill"), "{sub}");
    }
    // A corrupted checkpoint is refused by name, not loaded.
    let run_dir = dir.join("cli");
    let stop = AtomicBool::new(false);
    let r = Recipe::load(&good, &[]).unwrap();
    pipeline::run(&r, &opts(&stop, Some((Phase::Teacher, 4))), &mut |_| {}).unwrap_err();
    let ck = run_dir.join("teacher/checkpoints/step-00000004/optimizer.safetensors");
    let mut bytes = std::fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&ck, bytes).unwrap();
    let (code, _, err) = distill_cmd(&["resume", run_dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("optimizer.safetensors: checksum does not match MANIFEST"), "{err}");
    // A run without a trained student has nothing to export.
    let (code, _, err) = distill_cmd(&["export", run_dir.to_str().unwrap(), "--format", "gguf-q8_0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("student"), "{err}");
    // Running a different recipe into an existing run directory is refused.
    let (code, _, err) = distill_cmd(&["run", good.to_str().unwrap(), "--set", "optim.lr=0.002"]);
    assert_eq!(code, 2);
    assert!(err.contains("already holds a run with a different recipe"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every layer pattern trains end to end (held-out loss falls well below ln(V)) and then
/// generates through its per-layer caches.
#[test]
fn hybrid_patterns_train_and_generate() {
    let dir = tmp("hybrid");
    let stop = AtomicBool::new(false);
    for (i, pattern) in ["M", "AM", "MMA"].iter().enumerate() {
        let name = format!("h{i}");
        let text = tiny_recipe(&dir, &name, 40).replace("n_layers = 1\n", "").replace(
            "tie_embeddings = true\n",
            &format!("tie_embeddings = true\nlayer_pattern = \"{pattern}\"\nn_layers = {}\n\n[student.model.mamba]\nd_state = 8\nhead_dim = 8\nchunk_size = 8\n", pattern.len()),
        );
        let recipe = load(&text, &dir);
        assert_eq!(recipe.student.shape().layer_pattern, *pattern);
        let s = pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
        let run = dir.join(&name);
        let h1 = unigram_entropy(&run);
        assert!(s.student.loss < h1 - 0.5, "{pattern}: held-out loss {} vs unigram entropy {h1}", s.student.loss);
        let student = distill::model::store::load(&run.join("student/final"), &Device::flex()).unwrap().0;
        // Greedy generation through the caches equals argmax of a full forward pass over the
        // whole sequence at every step (no cache), up to EOS or max_tokens.
        let eos = distill::data::load_prepared(&run).unwrap().tokenizer.eos_id;
        let sampling = distill::generate::Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, max_tokens: 20 };
        let prompt = [5u32, 9, 12];
        let got = distill::generate::generate(&student, &prompt, eos, &sampling, &Device::flex(), |_| {});
        let mut seq: Vec<u32> = prompt.to_vec();
        let mut want = Vec::new();
        while want.len() < 20 {
            let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(seq.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, seq.len()]),
                &Device::flex(),
            );
            let logits: Vec<f32> =
                student.forward(ids).slice([0..1, seq.len() - 1..seq.len()]).into_data().try_to_vec::<f32>().unwrap();
            let next =
                (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a))).unwrap() as u32;
            if next == eos {
                break;
            }
            want.push(next);
            seq.push(next);
        }
        assert_eq!(got, want, "{pattern}: cached greedy generation vs full recomputation");
        if pattern.contains('M') {
            let (code, _, err) = distill_cmd(&["export", run.to_str().unwrap(), "--format", "gguf-q8_0"]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("cannot export this model as GGUF") && err.contains("Mamba-2"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A corpus whose training split is shorter than one row (seq_len + 1 tokens) is an input
/// error naming the split and the fix, in both preparation engines, before anything trains
/// (the in-memory engine used to check only the held-out split).
#[test]
fn corpus_shorter_than_a_row_is_refused() {
    let dir = tmp("short");
    let src = dir.join("docs.txt");
    // Long documents (held out, or filtered out of training by max_chars) and two short ones:
    // what is left for training is shorter than one row, the held-out split is not.
    let mut docs: Vec<String> = (0..18)
        .map(|i| format!("Story {i}: {}", "the cat sat on the mat and looked around the quiet room. ".repeat(4)))
        .collect();
    docs.insert(3, "A short one: the dog ran to the park.".into());
    docs.insert(11, "Another short one: a bird sang a song.".into());
    std::fs::write(&src, docs.join("\n\n")).unwrap();
    for streaming in [false, true] {
        let text = format!(
            "[run]\nname = \"s{streaming}\"\nout_dir = \"{out}\"\n\n[data]\nsource = \"text\"\npaths = [\"{src}\"]\nseq_len = 64\nvalid_fraction = 0.1\nstreaming = {streaming}\n\n[data.filter]\nmax_chars = 100\n\n[tokenizer]\nvocab_size = 300\n\n[teacher.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nd_ff = 64\n\n[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nd_ff = 64\n",
            out = dir.display(),
            src = src.display()
        );
        let r = load(&text, &dir);
        let e = distill::pipeline::prepare_data(&r, &dir.join(format!("s{streaming}")), &mut |_| {})
            .err()
            .unwrap_or_else(|| panic!("streaming = {streaming}: a corpus shorter than one row was accepted"));
        let msg = e.to_string();
        assert!(matches!(e, distill::Error::Input(_)), "{msg}");
        assert!(
            msg.contains("the training split has") && msg.contains("fewer than one row of data.seq_len + 1 = 65"),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `distill bench-train` times the recipe's own student loop in `<name>-bench` (the user's run
/// directory untouched), reports the steady window it was asked for, and runs again over the
/// same directory with other settings (data and teacher reused).
#[test]
fn bench_train_times_the_recipes_own_loop() {
    let dir = tmp("bench-train");
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, tiny_recipe(&dir, "bt", 8)).unwrap();
    let jsonl = dir.join("bench.jsonl");
    let (r, j) = (recipe.to_str().unwrap(), jsonl.to_str().unwrap());
    let (code, out, err) = distill_cmd(&["bench-train", r, "--steps", "5", "--warm", "2", "--jsonl", j]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("tokens/s") && out.contains("MFU"), "{out}");
    let v: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().trim()).unwrap();
    assert_eq!((v["steps"].as_u64(), v["warm_steps"].as_u64()), (Some(5), Some(2)));
    // Concatenated packing fills every row: 8 rows of 32 tokens a step.
    assert_eq!(v["tokens_per_step"].as_f64(), Some(256.0));
    assert!(v["tok_per_s"].as_f64().unwrap() > 0.0 && v["mfu"].is_null(), "no peak on the CPU: {v}");
    let rows = distill::train::metrics::read(&dir.join("bt-bench/metrics.jsonl"));
    assert_eq!(rows.iter().filter(|r| r.phase == "student").count(), 5);
    assert!(!dir.join("bt").exists(), "the recipe's own run directory is not touched");
    let checkpoints = dir.join("bt-bench/student/checkpoints");
    assert!(
        !checkpoints.exists() || std::fs::read_dir(&checkpoints).unwrap().next().is_none(),
        "a benchmark writes no checkpoints"
    );
    let (code, _, err) = distill_cmd(&["bench-train", r, "--steps", "2", "--set", "optim.lr=0.005"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// QAT follows the recipe: the student's steps before `qat.start_step` are a plain run's,
/// the later ones differ (the forward runs through ggml's Q4_0 blocks); a student width that
/// ggml's blocks cannot tile is refused when the recipe loads, naming the key.
#[test]
fn qat_starts_at_its_step_and_refuses_widths_ggml_cannot_block() {
    let dir = tmp("qat");
    let stop = AtomicBool::new(false);
    let plain = load(&tiny_recipe(&dir, "plain", 6), &dir);
    pipeline::run(&plain, &opts(&stop, None), &mut |_| {}).unwrap();
    let qat = |name: &str| {
        tiny_recipe(&dir, name, 6)
            + "\n[qat]\nenabled = true\nscheme = \"q4_0\"\nstart_step = 3\nembeddings = true\nactivations = \"int8-dynamic\"\n"
    };
    let qat_text = qat("qat");
    pipeline::run(&load(&qat_text, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let (a, b) = (rows(&dir.join("plain"), "student"), rows(&dir.join("qat"), "student"));
    assert_eq!((a.len(), b.len()), (6, 6));
    for i in 0..6 {
        let same = a[i]["loss"] == b[i]["loss"];
        assert_eq!(same, i < 3, "step {}: plain {} vs QAT {}", i + 1, a[i]["loss"], b[i]["loss"]);
    }
    // Interrupted inside the QAT phase and resumed: the same steps, bit for bit (the QAT state
    // is the recipe and the step, both in the checkpoint).
    let cut = load(&qat("qat-cut"), &dir);
    let e = pipeline::run(&cut, &opts(&stop, Some((Phase::Student, 4))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::Error::Interrupted(_)), "{e}");
    pipeline::resume(&dir.join("qat-cut"), &opts(&stop, None), &mut |_| {}).unwrap();
    let c = rows(&dir.join("qat-cut"), "student");
    assert_eq!(c.len(), 6);
    for (x, y) in b.iter().zip(&c) {
        for key in ["loss", "ce", "kl", "grad_norm"] {
            assert_eq!(x[key], y[key], "resumed QAT step {}: {key}", x["step"]);
        }
    }
    // `distill eval` of a run whose teacher lives outside it (a checkpoint), with PTQ rows.
    let ck = tiny_recipe(&dir, "ck", 6)
        .replace(
            "[teacher.optim]",
            &format!(
                "[teacher]\nkind = \"checkpoint\"\npath = \"{}\"\n\n[teacher.optim]",
                dir.join("plain/teacher/final").display()
            ),
        )
        .replace(
            "[tokenizer]\n",
            &format!("[tokenizer]\nkind = \"file\"\npath = \"{}\"\n", dir.join("plain/tokenizer.json").display()),
        );
    pipeline::run(&load(&ck, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let (rc, out, err) = distill_cmd(&["eval", dir.join("ck").to_str().unwrap(), "--ptq", "q8_0,q4_0"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("teacher") && out.contains("student q8_0 PTQ") && out.contains("student q4_0 PTQ"), "{out}");
    let (rc, _, err) = distill_cmd(&["eval", dir.join("ck").to_str().unwrap(), "--ptq", "q5_0"]);
    assert!(rc == 2 && err.contains("--ptq: expected q8_0, q4_0 or int4-g<N>"), "{rc}: {err}");
    let p = dir.join("bad.toml");
    std::fs::write(&p, qat_text.replace("d_ff = 64", "d_ff = 48")).unwrap();
    let e = Recipe::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("student.model.d_ff") && e.contains("got 48"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
