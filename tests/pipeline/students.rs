//! Students that start from trained models: a Hugging Face student (its logits transformers',
//! frozen groups left exactly as loaded), a vocabulary mismatch refused, and a student pruned
//! from the teacher by `distill prune` that a run then trains.

use super::*;
use burn::tensor::{Int, Tensor, TensorData};

/// A tiny run with the llama-gqa fixture as teacher and `student` as the `[student]` section.
fn hf_student_recipe(out: &Path, name: &str, teacher: &Path, student: &str, steps: usize) -> String {
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

{student}

[optim]
lr = 1e-2
min_lr = 1e-3
warmup_steps = 2
batch_size = 4
steps = {steps}

[checkpoint]
every_steps = 2

[eval]
every_steps = 2
batches = 1
"#,
        out = out.display(),
        teacher = teacher.display(),
    )
}

/// The fixture's ids and transformers' f32 logits (`tests/fixtures/hf/*/reference.safetensors`).
fn transformers_logits(dir: &Path) -> (Vec<i64>, Vec<f32>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()));
    let logits =
        st.tensor("logits_f32").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
    (ids.collect(), logits.collect())
}

/// Every named float parameter's values, by module path.
fn params(m: &distill::model::Decoder) -> std::collections::BTreeMap<String, Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct All(Vec<String>, std::collections::BTreeMap<String, Vec<f32>>);
    impl ModuleVisitor for All {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<burn::tensor::Tensor<D>>) {
            self.1.insert(self.0.join("."), p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut a = All(Vec::new(), Default::default());
    m.visit(&mut a);
    a.1
}

/// An HF student starts as its files are: its first weights compute transformers' logits for
/// the fixture, and, being the teacher's own model, its first step's KL is zero. Frozen groups
/// (the embedding, every norm, block 0) end the run exactly as loaded; the rest trained.
#[test]
fn hf_student_starts_from_its_files_and_frozen_groups_stay() {
    let dir = tmp("hfstudent");
    let fixture = PathBuf::from("tests/fixtures/hf/llama-gqa");
    let student = format!(
        "[student]\ninit = \"hf\"\npath = \"{}\"\nfreeze = [\"embedding\", \"norms\", \"layers 0..1\"]",
        fixture.display()
    );
    let recipe = load(&hf_student_recipe(&dir, "s", &fixture, &student, 4), &dir);
    let stop = AtomicBool::new(false);
    pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
    let run = dir.join("s");
    let dev = Device::flex();
    let (init, _) = distill::model::store::load(&run.join("student/init"), &dev).unwrap();
    let (ids, want) = transformers_logits(&fixture);
    let t = ids.len();
    let got = init.forward(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &dev));
    let got = got.into_data().try_to_vec::<f32>().unwrap();
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4, "the loaded student's logits vs transformers': {err}");
    let first = &rows(&run, "student")[0];
    assert!(first["kl"].as_f64().unwrap().abs() < 1e-6, "student == teacher at step 1: kl {}", first["kl"]);
    let (fin, _) = distill::model::store::load(&run.join("student/final"), &dev).unwrap();
    let (a, b) = (params(&init), params(&fin));
    let mut moved = 0;
    for (name, before) in &a {
        let frozen = name.starts_with("embed") || name.contains("norm") || name.starts_with("blocks.0.");
        let same = before == &b[name];
        assert_eq!(same, frozen, "{name}: frozen {frozen}, unchanged {same}");
        moved += !same as usize;
    }
    assert!(moved > 0);
    std::fs::remove_dir_all(&dir).ok();
}

/// A student whose vocabulary differs from the teacher's by one token is refused before
/// training, naming the id and both spellings (exit 2, nothing trained).
#[test]
fn a_student_with_another_vocabulary_is_refused() {
    let dir = tmp("vocab");
    let fixture = PathBuf::from("tests/fixtures/hf/llama-gqa");
    let other = dir.join("other-student");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), other.join(f)).unwrap();
    }
    let mut tok: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("tokenizer.json")).unwrap()).unwrap();
    // Two tokens swap ids: still a valid tokenizer, but not the teacher's vocabulary.
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let name_of = |id: u64| vocab.iter().find(|(_, v)| v.as_u64() == Some(id)).map(|(k, _)| k.clone()).unwrap();
    let (a, b) = (name_of(300), name_of(301));
    vocab.insert(a.clone(), 301.into());
    vocab.insert(b.clone(), 300.into());
    std::fs::write(other.join("tokenizer.json"), tok.to_string()).unwrap();
    let student = format!("[student]\ninit = \"hf\"\npath = \"{}\"", other.display());
    let recipe = load(&hf_student_recipe(&dir, "v", &fixture, &student, 2), &dir);
    let stop = AtomicBool::new(false);
    let e = pipeline::run(&recipe, &opts(&stop, None), &mut |_| {}).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("at id 300") && msg.contains(&format!("{a:?}")) && msg.contains(&format!("{b:?}")), "{msg}");
    assert!(!dir.join("v/student/checkpoints/LATEST").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `distill prune` cuts the run's pretrained teacher to the student shape and writes the
/// importance table; the run then starts from exactly that student (its first evaluation equal
/// to an evaluation of the kept init) and trains it.
#[test]
fn pruned_student_is_written_then_trained() {
    let dir = tmp("prune");
    let text = tiny_recipe(&dir, "p", 6).replace(
        "[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nn_kv_heads = 1\nd_ff = 64\nmax_seq_len = 64\ntie_embeddings = true",
        "[student]\ninit = \"prune\"\n\n[student.prune]\ncalibration_rows = 16\n\n[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 2\nn_kv_heads = 1\nd_ff = 64",
    );
    let recipe = load(&text, &dir);
    let stop = AtomicBool::new(false);
    let m = pipeline::prune(&recipe, &opts(&stop, None), &mut |_| {}).unwrap();
    let s = &m.config.shape;
    assert_eq!((s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.d_ff), (1, 32, 2, 1, 64));
    let run = dir.join("p");
    let imp: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("student/prune/importance.json")).unwrap()).unwrap();
    assert_eq!(imp["importance"]["block_influence"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(run.join("student/prune/importance.svg")).unwrap().starts_with("<svg"));
    // Interrupted after 3 steps and resumed: the same run as one from `distill run` alone
    // (which prunes for itself), step for step.
    let e = pipeline::run(&recipe, &opts(&stop, Some((Phase::Student, 3))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::error::Error::Interrupted(_)), "{e}");
    pipeline::resume(&run, &opts(&stop, None), &mut |_| {}).unwrap();
    let whole = load(&text.replace("name = \"p\"", "name = \"q\""), &dir);
    pipeline::run(&whole, &opts(&stop, None), &mut |_| {}).unwrap();
    let (r, q) = (rows(&run, "student"), rows(&dir.join("q"), "student"));
    assert_eq!((r.len(), q.len()), (6, 6));
    for (x, y) in r.iter().zip(&q) {
        for key in ["loss", "kl", "grad_norm", "eval_loss"] {
            assert_eq!(x[key], y[key], "step {}: {key}", x["step"]);
        }
    }
    let (fin, _) = distill::model::store::load(&run.join("student/final"), &Device::flex()).unwrap();
    assert_eq!(fin.config, m.config);
    std::fs::remove_dir_all(&dir).ok();
}

/// A hidden-state loss through a learned projection (student width 32, teacher 64): logged per
/// step, inside the step's loss as `alpha ce + (1 - alpha) kl + weight hidden`, saved with the
/// checkpoints (a run stopped at step 3 and resumed logs what the uninterrupted one does), and
/// gone from the final model. With a cached teacher it is refused, naming why.
#[test]
fn hidden_state_loss_trains_logs_and_resumes() {
    let dir = tmp("hidden");
    let text = |name: &str| {
        tiny_recipe(&dir, name, 6)
            .replace(
                "[optim]",
                "[distill]\nalpha = 0.5\n\n[distill.hidden]\nweight = 0.25\nloss = \"cosine\"\n\n[optim]",
            )
            .replace("n_layers = 1", "n_layers = 2")
    };
    let stop = AtomicBool::new(false);
    pipeline::run(&load(&text("a"), &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let b = load(&text("b"), &dir);
    let e = pipeline::run(&b, &opts(&stop, Some((Phase::Student, 3))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::error::Error::Interrupted(_)), "{e}");
    pipeline::resume(&dir.join("b"), &opts(&stop, None), &mut |_| {}).unwrap();
    let (ra, rb) = (rows(&dir.join("a"), "student"), rows(&dir.join("b"), "student"));
    assert_eq!((ra.len(), rb.len()), (6, 6));
    for (x, y) in ra.iter().zip(&rb) {
        let f = |r: &Value, k: &str| r[k].as_f64().unwrap();
        let (loss, ce, kl, hidden) = (f(x, "loss"), f(x, "ce"), f(x, "kl"), f(x, "hidden"));
        assert!(hidden > 0.0 && hidden < 2.0, "cosine loss in (0, 2): {hidden}");
        let want = 0.5 * ce + 0.5 * kl + 0.25 * hidden;
        assert!((loss - want).abs() < 1e-5 * want, "step {}: loss {loss} vs {want}", x["step"]);
        for key in ["loss", "hidden", "grad_norm"] {
            assert_eq!(x[key], y[key], "step {}: {key} after resume", x["step"]);
        }
    }
    let (fin, _) = distill::model::store::load(&dir.join("a/student/final"), &Device::flex()).unwrap();
    assert!(fin.hidden_proj.is_none());
    let cached = text("c").replace("[teacher.optim]", "[teacher]\nlogits = \"cache\"\n\n[teacher.optim]");
    std::fs::write(dir.join("c.toml"), cached).unwrap();
    let e = Recipe::load(&dir.join("c.toml"), &[]).unwrap_err().to_string();
    assert!(e.contains("distill.hidden.weight") && e.contains("teacher cache"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
