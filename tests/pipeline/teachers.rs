//! Teachers as runs see them: the top-k cache (online vs cached, offline, identity), curricula
//! on teacher scores, teacher-perplexity filtering, and the BOS a teacher's tokenizer adds.

use super::*;

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
    // `eval` with the teacher, then from its cache alone once the teacher's files are gone:
    // the student's held-out figures need no teacher; agreement comes from the cache's top-1.
    let run = dir.join("cached");
    let r = run.to_str().unwrap();
    let (code, live, err) = distill_cmd(&["eval", r, "--json"]);
    assert_eq!(code, 0, "{err}");
    let live: Value = serde_json::from_str(live.trim()).unwrap();
    std::fs::remove_dir_all(run.join("teacher/final")).unwrap();
    let (code, out, err) = distill_cmd(&["eval", r, "--json"]);
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["teacher"], "cache", "{c}");
    for key in ["loss", "ece", "tokens"] {
        assert_eq!(c["models"][1][key], live["models"][1][key], "student {key}");
    }
    let (t, l) = (c["models"][0]["loss"].as_f64().unwrap(), live["models"][0]["loss"].as_f64().unwrap());
    assert!((t - l).abs() < 1e-6 * l, "the teacher's held-out loss as the cache recorded it: {t} vs {l}");
    let ag = c["models"][1]["agreement"].as_f64().unwrap();
    assert!(ag > 0.0 && ag <= 1.0 && c["models"][1]["agreement_tokens"].as_u64().unwrap() > 0, "{c}");
    assert!(c["models"][1]["kl_teacher"].is_null() && c["missing"].as_str().unwrap().contains("live teacher"));
    let (code, _, err) = distill_cmd(&["eval", r, "--policy", "2"]);
    assert_eq!(code, 2);
    assert!(err.contains("need the live teacher"), "{err}");
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
    distill::pipeline::prepare_data(&r, &dir.join("ppl"), &mut |_| {}).unwrap();
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
    let valid = Packed::build(prepared.valid, prepared.valid_flags, 32, prepared.tokenizer.eos_id, a.data.packing);
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
        let p = distill::pipeline::prepare_data(&r, &dir.join(&name), &mut |_| {}).unwrap();
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
