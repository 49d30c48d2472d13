//! Whole-run tests (one integration binary: each file in tests/ links the whole crate).

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
    let st = distill::export::native::read_int8(&run.join("export/model.int8.safetensors")).unwrap();
    let (w, shape) = &st["model.layers.0.self_attn.k_proj.weight"];
    assert_eq!(shape, &vec![8, 32], "HF layout [out = n_kv_heads * head_dim, in = d_model]");
    let student = distill::model::store::load(&run.join("student/final"), &dev).unwrap().0;
    let fq = distill::quant::int8::fake_quant_model(&student);
    let (want, _, _) = distill::quant::int8::linear_out_in(fq.blocks[0].linears()[1].1);
    assert!(w.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
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
        "data",
        "validate",
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
    let ck = run_dir.join("teacher/checkpoints/step-00000004/optimizer.bpk");
    let mut bytes = std::fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&ck, bytes).unwrap();
    let (code, _, err) = distill_cmd(&["resume", run_dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("optimizer.bpk: checksum does not match MANIFEST"), "{err}");
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
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Training from a full-vocabulary cache (f16 values) follows the online run step by step (same
/// rows in the same order, targets within f16 rounding); a cache shared through `cache.path`
/// is refused by a run whose data or teacher differ.
#[test]
fn cached_teacher_matches_online_teacher() {
    let dir = tmp("cache");
    let stop = AtomicBool::new(false);
    let steps = 24;
    let online = load(&tiny_recipe(&dir, "online", steps), &dir);
    let a = pipeline::run(&online, &opts(&stop, None), &mut |_| {}).unwrap();
    let cache_dir = dir.join("shared-cache");
    let cached_text = tiny_recipe(&dir, "cached", steps)
        .replace(
            "[student.model]",
            &format!(
                "[cache]\nk = 320\nvalues = \"f16\"\nrows_per_shard = 16\npath = \"{}\"\n\n[student.model]",
                cache_dir.display()
            ),
        )
        .replace("[teacher.optim]", "[teacher]\nlogits = \"cache\"\n\n[teacher.optim]");
    let cached = load(&cached_text, &dir);
    let m = pipeline::cache_teacher(&cached, &opts(&stop, None), &mut |_| {}).unwrap();
    assert!(m.shards.len() > 1 && m.tokens > 0);
    let b = pipeline::run(&cached, &opts(&stop, None), &mut |_| {}).unwrap();
    let (ra, rb) = (rows(&dir.join("online"), "student"), rows(&dir.join("cached"), "student"));
    assert_eq!(ra.len(), steps);
    for (x, y) in ra.iter().zip(&rb).take(5) {
        for key in ["kl", "ce", "loss"] {
            let (x, y) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((x - y).abs() < 2e-3 * x.abs().max(1.0), "step {key}: online {x} vs cache {y}");
        }
    }
    assert!(
        (a.student.loss - b.student.loss).abs() < 0.01 * a.student.loss,
        "{} vs {}",
        a.student.loss,
        b.student.loss
    );
    // Other data (another seed) with the same cache path: refused, nothing trained.
    let other =
        load(&cached_text.replace("seed = 7", "seed = 8").replace("name = \"cached\"", "name = \"other\""), &dir);
    let e = pipeline::run(&other, &opts(&stop, None), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("made for") && e.contains("distill cache-teacher"), "{e}");
    assert!(!dir.join("other/student/checkpoints/LATEST").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// A curriculum (root schedule on teacher cross-entropy, easy-to-hard first epoch) with alpha
/// and tau schedules trains, stores its scores with the data, and logs its weights.
#[test]
fn curriculum_and_schedules_train_and_log() {
    let dir = tmp("curriculum");
    let stop = AtomicBool::new(false);
    let text = tiny_recipe(&dir, "cur", 12).replace("[optim]", "[distill]\nalpha = 0.5\nalpha_end = 0.1\ntemperature = 2.0\ntemperature_end = 1.0\n\n[curriculum]\nschedule = \"root\"\nscore = \"teacher_ce\"\norder = \"easy_to_hard\"\nstart = 0.3\nramp = 0.5\n\n[optim]");
    let recipe = load(&text, &dir);
    let s = pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
    // 12 steps test the curriculum's bookkeeping, not learning (other tests assert that).
    assert!(s.student.loss.is_finite());
    let run = dir.join("cur");
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("data/difficulty-teacher_ce.json")).unwrap()).unwrap();
    let n_rows = stored["scores"].as_array().unwrap().len();
    assert_eq!(stored["rows"].as_u64().unwrap() as usize, n_rows);
    let r = rows(&run, "student");
    let first = &r[0];
    assert_eq!(first["alpha"].as_f64().unwrap(), 0.5);
    assert_eq!(first["temperature"].as_f64().unwrap(), 2.0);
    assert!((first["competence"].as_f64().unwrap() - 0.3).abs() < 1e-12);
    // The first batch of an easy-to-hard epoch is the easiest 8 rows: all at full weight.
    assert_eq!(first["w_min"].as_f64().unwrap(), 1.0);
    assert_eq!(first["hard_share"].as_f64().unwrap(), 0.0);
    let last = r.last().unwrap();
    assert!((last["alpha"].as_f64().unwrap() - (0.5 - 0.4 * 11.0 / 12.0)).abs() < 1e-9);
    assert_eq!(last["competence"].as_f64().unwrap(), 1.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// One document per row trains; a checkpoint teacher's perplexity band removes the junk that
/// passes the text rules (word salad) and keeps the stories.
#[test]
fn doc_per_row_packing_and_teacher_ppl_filter() {
    let dir = tmp("docrow");
    let stop = AtomicBool::new(false);
    // The student trains 60 steps (enough to beat unigram statistics), the teacher 30.
    let text = tiny_recipe(&dir, "rows", 30)
        .replace("valid_fraction = 0.1", "valid_fraction = 0.1\npacking = \"doc_per_row\"")
        .replace(
            "[optim]\nlr = 1e-2\nmin_lr = 1e-3\nwarmup_steps = 5\nbatch_size = 8\nsteps = 30",
            "[optim]\nlr = 1e-2\nmin_lr = 1e-3\nwarmup_steps = 5\nbatch_size = 8\nsteps = 60",
        );
    assert!(text.contains("steps = 60"));
    let s = pipeline::run(&load(&text, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let h1 = unigram_entropy(&dir.join("rows"));
    assert!(s.student.loss < h1 - 0.2, "{} vs unigram entropy {h1}", s.student.loss);
    let teacher = dir.join("rows/teacher/final");
    let text = tiny_recipe(&dir, "ppl", 8)
        .replace(
            "valid_fraction = 0.1",
            "valid_fraction = 0.1\nsynthetic_noise = 0.6\n\n[data.filter]\nteacher_ppl_max = 30.0",
        )
        .replace("[tokenizer]\nvocab_size = 320", "[tokenizer]\nkind = \"teacher\"")
        .replace(
            "[teacher.optim]",
            &format!("[teacher]\nkind = \"checkpoint\"\npath = \"{}\"\n\n[teacher.optim]", teacher.display()),
        );
    let r = load(&text, &dir);
    distill::data::prepare(&r, &dir.join("ppl"), &mut |_| {}).unwrap();
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ppl/data/filter_report.json")).unwrap()).unwrap();
    let rules = rep["filter"]["rules"].as_array().unwrap();
    let ppl = rules.iter().find(|x| x["rule"] == "teacher_ppl").unwrap();
    let removed = ppl["removed_docs"].as_u64().unwrap();
    // 0.6 x 360 training stories = 216 junk documents, a sixth of them word salad (36).
    assert!(removed >= 30, "teacher_ppl removed {removed}");
    for ex in ppl["examples"].as_array().unwrap() {
        assert!(!ex.as_str().unwrap().starts_with("Once upon a time"), "a story was removed: {ex}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A student run on a Hugging Face teacher's top-k cache (the fixture folder at `teacher`).
fn hf_cached_recipe(out: &Path, name: &str, teacher: &Path, cache: &Path, steps: usize) -> String {
    format!(
        r#"
[run]
name = "{name}"
seed = 7
out_dir = "{out}"

[data]
synthetic_docs = 200
seq_len = 32
valid_fraction = 0.1

[tokenizer]
kind = "teacher"

[teacher]
kind = "hf"
path = "{teacher}"
logits = "cache"

[cache]
k = 16
values = "q8"
rows_per_shard = 16
path = "{cache}"

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
warmup_steps = 2
batch_size = 8
steps = {steps}

[checkpoint]
every_steps = 4

[eval]
every_steps = 4
batches = 2
"#,
        out = out.display(),
        teacher = teacher.display(),
        cache = cache.display()
    )
}

/// A temporary copy of the llama-gqa fixture (so a test may delete it).
fn copy_hf_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(Path::new("tests/fixtures/hf/llama-gqa").join(f), to.join(f)).unwrap();
    }
}

/// A cached teacher is offline: once the cache exists, a student run needs neither the
/// teacher's folder (weights, config, tokenizer) nor a pass of the teacher, and it trains and
/// reports exactly as a run with the folder present, including the teacher's held-out loss
/// (checked against an evaluation of the loaded teacher).
#[test]
fn cached_hf_teacher_runs_without_its_folder() {
    let dir = tmp("offline");
    let teacher = dir.join("teacher-copy");
    copy_hf_fixture(&teacher);
    let cache = dir.join("cache");
    let stop = AtomicBool::new(false);
    let a = load(&hf_cached_recipe(&dir, "a", &teacher, &cache, 8), &dir);
    pipeline::cache_teacher(&a, &opts(&stop, None), &mut |_| {}).unwrap();
    let sa = pipeline::run(&a, &opts(&stop, None), &mut |_| {}).unwrap();
    // The reference: the teacher itself, loaded and evaluated on run a's held-out split.
    let dev = Device::flex();
    let (t, _) = distill::teacher::hf::load(&teacher, &dev, burn::tensor::DType::F32).unwrap();
    let prepared = distill::data::load_prepared(&dir.join("a")).unwrap();
    let valid = Packed::build(prepared.valid, 32, prepared.tokenizer.eos_id, a.data.packing);
    let want = evaluate(&t, &valid, 8, None, &dev);
    assert!((sa.teacher.loss - want.loss).abs() < 1e-9, "teacher loss {} vs {}", sa.teacher.loss, want.loss);
    assert_eq!(sa.teacher.tokens, want.tokens);
    assert_eq!(sa.teacher_params, t.config.matmul_params());

    std::fs::remove_dir_all(&teacher).unwrap();
    let b = load(&hf_cached_recipe(&dir, "b", &teacher, &cache, 8), &dir);
    let mut logs = Vec::new();
    let sb = pipeline::run(&b, &opts(&stop, None), &mut |l| logs.push(l)).unwrap();
    let (ra, rb) = (rows(&dir.join("a"), "student"), rows(&dir.join("b"), "student"));
    assert_eq!(ra.len(), 8);
    assert_eq!(rb.len(), ra.len());
    for (x, y) in ra.iter().zip(&rb) {
        for key in ["step", "loss", "ce", "kl", "grad_norm", "lr", "tokens", "eval_loss"] {
            assert_eq!(x[key], y[key], "step {}: {key}", x["step"]);
        }
    }
    assert_eq!(sa.student.loss, sb.student.loss);
    assert_eq!(sa.student_int8.loss, sb.student_int8.loss);
    assert_eq!(
        (sa.teacher.loss, sa.teacher.ppl, sa.teacher.tokens),
        (sb.teacher.loss, sb.teacher.ppl, sb.teacher.tokens)
    );
    assert_eq!(sa.teacher_params, sb.teacher_params);
    let table = logs.last().unwrap();
    assert!(table.contains(&format!("{:.4}", want.loss)), "the summary shows the teacher's held-out loss: {table}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The teacher's dtype changes its logits, so it is part of the cache's identity: a cache
/// built with the f32 teacher is refused for a bf16 run (exit 2, nothing trained).
#[test]
fn a_cache_from_an_f32_teacher_is_refused_for_a_bf16_run() {
    let dir = tmp("dtype");
    let teacher = PathBuf::from("tests/fixtures/hf/llama-gqa");
    let cache = dir.join("cache");
    let stop = AtomicBool::new(false);
    let text = hf_cached_recipe(&dir, "f32", &teacher, &cache, 4);
    pipeline::cache_teacher(&load(&text, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let half = text
        .replace("name = \"f32\"", "name = \"bf16\"")
        .replace("logits = \"cache\"", "logits = \"cache\"\ndtype = \"bf16\"");
    let e = pipeline::run(&load(&half, &dir), &opts(&stop, None), &mut |_| {}).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("dtype") && msg.contains("bf16") && msg.contains("f32") && msg.contains("distill cache-teacher"),
        "{msg}"
    );
    assert!(!dir.join("bf16/student/checkpoints/LATEST").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Documents start with the BOS the teacher's tokenizer adds (Llama's post-processor), in both
/// preparation engines: the prepared stream holds exactly transformers' `tok(text)` ids
/// (scripts/make_hf_fixtures.py, add_special_tokens=True) followed by EOS, and the teacher's
/// logits on them, BOS first, equal transformers'.
#[test]
fn documents_start_with_the_teachers_bos() {
    let dir = tmp("bos");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-bos");
    let bos: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("bos.json")).unwrap()).unwrap();
    let text = bos["text"].as_str().unwrap();
    let want: Vec<u32> = bos["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert_eq!(want[0], bos["bos_id"].as_u64().unwrap() as u32);
    // The fixture's text among other documents; wherever the split puts it, it is encoded alone.
    let mut docs = vec![text.to_string()];
    docs.extend(
        (0..30).map(|i| format!("Story number {i}: a small cat walked to the market and bought {} red apples.", i + 2)),
    );
    let src = dir.join("docs.txt");
    std::fs::write(&src, docs.join("\n\n")).unwrap();
    for streaming in [false, true] {
        let name = format!("bos{streaming}");
        let recipe = format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n\n[data]\nsource = \"text\"\npaths = [\"{src}\"]\nseq_len = 16\nvalid_fraction = 0.2\nstreaming = {streaming}\n\n[data.filter]\ndedup = \"none\"\n\n[tokenizer]\nkind = \"teacher\"\n\n[teacher]\nkind = \"hf\"\npath = \"{fx}\"\n\n[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nd_ff = 64\n",
            out = dir.display(),
            src = src.display(),
            fx = fixture.display()
        );
        let r = load(&recipe, &dir);
        let p = distill::data::prepare(&r, &dir.join(&name), &mut |_| {}).unwrap();
        let eos = p.tokenizer.eos_id;
        let mut with_eos = want.clone();
        with_eos.push(eos);
        let found = [&*p.train, &*p.valid].iter().any(|s| s.windows(with_eos.len()).any(|w| w == with_eos.as_slice()));
        assert!(found, "streaming = {streaming}: the prepared tokens hold transformers' ids {want:?} + EOS");
        // Every document starts with BOS: BOS follows each EOS and opens each split.
        for s in [&*p.train, &*p.valid] {
            assert_eq!(s[0], want[0], "streaming = {streaming}: a split opens with BOS");
            assert!(
                s.windows(2).filter(|w| w[0] == eos).all(|w| w[1] == want[0]),
                "streaming = {streaming}: BOS after every EOS"
            );
        }
    }
    // The teacher on those ids: its logits equal transformers' (f32 model, f32 tolerance).
    let dev = Device::flex();
    let (teacher, _) = distill::teacher::hf::load(&fixture, &dev, burn::tensor::DType::F32).unwrap();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(want.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, want.len()]),
        &dev,
    );
    let got: Vec<f32> = teacher.forward(ids).into_data().try_to_vec::<f32>().unwrap();
    let bytes = std::fs::read(fixture.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let reference: Vec<f32> = st
        .tensor("logits_f32")
        .unwrap()
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(got.len(), reference.len());
    let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 2e-5, "logits differ from transformers' by {worst}");
    std::fs::remove_dir_all(&dir).ok();
}
