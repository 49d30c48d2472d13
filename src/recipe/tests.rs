//! Recipe loading end to end: exact error messages with their line:column.

use super::*;

const BASE: &str = r#"[run]
name = "t"

[data]
seq_len = 64

[teacher.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 128
max_seq_len = 128

[student.model]
d_model = 32
n_layers = 1
n_heads = 4
n_kv_heads = 1
d_ff = 64

[distill]
alpha = 0.5
temperature = 2.0

[optim]
lr = 0.001
warmup_steps = 10
steps = 100
"#;

fn err(text: &str, overrides: &[&str]) -> String {
    let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let e = Recipe::from_str_with(text, Path::new("r.toml"), &ov).unwrap_err();
    assert!(matches!(e, Error::Input(_)));
    assert_eq!(e.exit_code(), 2);
    e.to_string()
}

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_recipe_is_valid_and_resolves_defaults() {
    let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &[]).unwrap();
    let s = r.student.shape();
    assert_eq!((s.n_kv_heads, s.max_seq_len, s.tie_embeddings), (1, 512, false));
    assert_eq!(r.optim.batch_size, 16);
    // The printed resolved recipe loads back to the same recipe.
    let again = Recipe::from_str_with(&r.to_toml(), Path::new("resolved.toml"), &[]).unwrap();
    assert_eq!(again, r);
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let m = err(&with("alpha = 0.5", "alpah = 0.5"), &[]);
    assert!(m.starts_with("r.toml:23:1: key `distill.alpah`: unknown field `alpah`, expected one of `alpha`, `temperature`, `divergence`"), "{m}");
}

#[test]
fn wrong_type_names_key_and_position() {
    let m = err(&with("d_ff = 128", "d_ff = \"wide\""), &[]);
    assert!(
        m.starts_with("r.toml:12:8: key `teacher.model.d_ff`: invalid type: string \"wide\", expected usize"),
        "{m}"
    );
}

#[test]
fn heads_must_divide() {
    let m = err(&with("n_kv_heads = 2", "n_kv_heads = 3"), &[]);
    assert_eq!(m, "r.toml:11:1: key `teacher.model.n_kv_heads`: n_heads (4) must be divisible by n_kv_heads (3)");
    let m = err(&with("d_model = 32", "d_model = 36"), &[]);
    assert!(
        m.starts_with(
            "r.toml:18:1: key `student.model.n_heads`: d_model (36) must split into n_heads (4) heads of even size"
        ),
        "{m}"
    );
}

#[test]
fn alpha_and_temperature_ranges() {
    assert_eq!(
        err(&with("alpha = 0.5", "alpha = 1.5"), &[]),
        "r.toml:23:1: key `distill.alpha`: expected 0 <= alpha <= 1, got 1.5"
    );
    assert_eq!(
        err(&with("temperature = 2.0", "temperature = 0.0"), &[]),
        "r.toml:24:1: key `distill.temperature`: expected tau > 0, got 0"
    );
    assert_eq!(
        err(BASE, &["distill.alpha=-0.1"]),
        "--set distill.alpha=-0.1: key `distill.alpha`: expected 0 <= alpha <= 1, got -0.1"
    );
}

#[test]
fn seq_len_within_both_contexts() {
    let m = err(&with("seq_len = 64", "seq_len = 256"), &[]);
    assert_eq!(
        m,
        "r.toml:5:1: key `data.seq_len`: seq_len (256) exceeds the teacher's context teacher.model.max_seq_len (128)"
    );
}

#[test]
fn paths_must_exist() {
    let m = err(&with("[data]\n", "[data]\nsource = \"jsonl\"\npaths = [\"/no/such.jsonl\"]\n"), &[]);
    assert_eq!(m, "r.toml:6:1: key `data.paths`: file /no/such.jsonl does not exist");
    let m = err(&with("[student.model]\n", "[student]\nconfig = \"/no/student.toml\"\n\n[student.model]\n"), &[]);
    assert!(m.starts_with("r.toml:16:1: key `student.config`: /no/student.toml: cannot read file"), "{m}");
}

#[test]
fn config_files_are_merged_under_inline_keys_and_report_their_own_errors() {
    let dir = std::env::temp_dir().join(format!("distill-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("s.toml");
    std::fs::write(&cfg, "d_model = 48\nn_layers = 3\nn_heads = 4\nd_ff = 96\n").unwrap();
    let text = with(
        "[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nn_kv_heads = 1\nd_ff = 64\n",
        &format!("[student]\nconfig = \"{}\"\n\n[student.model]\nn_layers = 2\n", cfg.display()),
    );
    let r = Recipe::from_str_with(&text, Path::new("r.toml"), &[]).unwrap();
    let s = r.student.shape();
    assert_eq!((s.d_model, s.n_layers, s.n_kv_heads, s.d_ff), (48, 2, 4, 96));
    std::fs::write(&cfg, "d_model = 48\nn_layer = 3\n").unwrap();
    let m = err(&text, &[]);
    assert!(m.starts_with(&format!("{}:2:1: key `n_layer`: unknown field `n_layer`", cfg.display())), "{m}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_required_shape_key() {
    let m = err(&with("d_ff = 64\n", ""), &[]);
    assert!(m.starts_with("r.toml:15:1: key `student.model.d_ff` is required"), "{m}");
}

#[test]
fn optimizer_and_data_ranges() {
    assert_eq!(
        err(&with("lr = 0.001", "lr = 0.0"), &[]),
        "r.toml:27:1: key `optim.lr`: expected a learning rate > 0, got 0"
    );
    assert_eq!(
        err(&with("warmup_steps = 10", "warmup_steps = 200"), &[]),
        "r.toml:28:1: key `optim.warmup_steps`: warmup_steps (200) exceeds steps (100)"
    );
    assert_eq!(
        err(BASE, &["optim.batch_size=0"]),
        "--set optim.batch_size=0: key `optim.batch_size`: expected a positive integer, got 0"
    );
    assert_eq!(
        err(BASE, &["data.valid_fraction=0.9"]),
        "--set data.valid_fraction=0.9: key `data.valid_fraction`: expected a value in (0, 0.5), got 0.9"
    );
    let m = err(BASE, &["tokenizer.vocab_size=100"]);
    assert!(m.starts_with("--set tokenizer.vocab_size=100: key `tokenizer.vocab_size`: expected at least 300"), "{m}");
    let m = err(BASE, &["teacher.optim.beta2=1.0"]);
    assert_eq!(m, "--set teacher.optim.beta2=1.0: key `teacher.optim.beta2`: expected a value in [0, 1), got 1");
    assert_eq!(
        err(BASE, &["run.name=a/b"]),
        "--set run.name=a/b: key `run.name`: expected a plain directory name, got \"a/b\""
    );
    let m = err(BASE, &["tokenizer.kind=file"]);
    assert!(
        m.starts_with(
            "r.toml (default value, key not set): key `tokenizer.path`: required when tokenizer.kind = \"file\""
        ),
        "{m}"
    );
}

#[test]
fn overrides_apply_and_report_bad_values() {
    let r =
        Recipe::from_str_with(BASE, Path::new("r.toml"), &["optim.lr=3e-4".into(), "run.name=other".into()]).unwrap();
    assert_eq!((r.optim.lr, r.run.name.as_str()), (3e-4, "other"));
    let m = err(BASE, &["optim.steps=many"]);
    assert!(m.starts_with("--set optim.steps=many: invalid type: string \"many\", expected usize"), "{m}");
    assert!(err(BASE, &["optim.lr"]).contains("expected KEY=VALUE"));
    assert!(err(BASE, &["optim.nope=1"]).contains("unknown field `nope`"));
}

#[test]
fn backends_not_compiled_in_are_refused() {
    if cfg!(feature = "cuda") {
        return;
    }
    let m = err(&with("name = \"t\"", "name = \"t\"\nbackend = \"cuda\""), &[]);
    assert_eq!(
        m,
        "r.toml:3:1: key `run.backend`: backend Cuda is not compiled into this binary; rebuild with `--features cuda`"
    );
}

#[test]
fn loaded_teachers_bring_shape_and_vocabulary() {
    let m = err(BASE, &["tokenizer.kind=teacher"]);
    assert!(
        m.contains("key `tokenizer.kind`: \"teacher\" needs teacher.kind = \"hf\", \"gguf\" or \"checkpoint\""),
        "{m}"
    );
    let m = err(BASE, &["teacher.kind=gguf", "teacher.path=/no/such.gguf"]);
    assert!(m.contains("key `teacher.path`: /no/such.gguf is not a GGUF file"), "{m}");
    let m = err(BASE, &["teacher.kind=hf"]);
    assert!(m.contains("key `teacher.path`: required when teacher.kind = \"hf\""), "{m}");
    let m = err(BASE, &["teacher.kind=hf", "teacher.path=/no/such/dir"]);
    assert!(m.contains("/no/such/dir is not a teacher directory for kind \"hf\" (no config.json in it)"), "{m}");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/llama-gqa");
    let ov = ["teacher.kind=hf".to_string(), format!("teacher.path={fixture}")];
    let m = err(BASE, &[ov[0].as_str(), ov[1].as_str()]);
    assert!(m.contains("key `tokenizer.kind`: this teacher brings its own vocabulary"), "{m}");
    let mut ok = ov.to_vec();
    ok.push("tokenizer.kind=teacher".into());
    let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &ok).unwrap();
    assert_eq!(r.teacher.model, PartialShape::default(), "the recipe's teacher shape is not used");
    // A student from the same folder takes its shape from config.json (64 wide, 2 layers, 4/2
    // heads), and may not be given another; a pruned one keeps what [student.model] shrinks.
    let student = |extra: &[&str]| {
        let text = BASE.replace(
            "[student.model]\nd_model = 32\nn_layers = 1\nn_heads = 4\nn_kv_heads = 1\nd_ff = 64\n",
            "[student]\n",
        );
        let mut ov = ok.clone();
        ov.extend(extra.iter().map(|x| x.to_string()));
        Recipe::from_str_with(&text, Path::new("r.toml"), &ov)
    };
    let r = student(&["student.init=hf", &format!("student.path={fixture}")]).unwrap();
    let s = r.student.shape();
    assert_eq!((s.d_model, s.n_layers, s.n_heads, s.n_kv_heads), (64, 2, 4, 2));
    let e = student(&["student.init=hf", &format!("student.path={fixture}"), "student.model.n_layers=1"]).unwrap_err();
    assert!(e.to_string().contains("key `student.model`: a student loaded from"), "{e}");
    let r = student(&["student.init=prune", "student.model.n_layers=1", "student.model.d_ff=32"]).unwrap();
    let s = r.student.shape();
    assert_eq!((s.d_model, s.n_layers, s.d_ff, s.n_heads), (64, 1, 32, 4));
}

#[test]
fn keys_are_located_as_toml_reads_them() {
    // An element of a multi-line array names the array's key.
    let m = err(&with("[data]\n", "[data]\npaths = [\n  \"a\",\n  3,\n]\n"), &[]);
    assert!(m.starts_with("r.toml:7:3: key `data.paths`: invalid type: integer `3`"), "{m}");
    // A syntax error past its key still names it.
    let m = err(&with("alpha = 0.5", "alpha = "), &[]);
    assert!(m.starts_with("r.toml:23:") && m.contains("key `distill.alpha`"), "{m}");
    // A key left out of a written section points at the section's header.
    let m = err(&with("warmup_steps = 10\nsteps = 100", "steps = 10"), &[]);
    assert_eq!(
        m,
        "r.toml:26 (default value in this section): key `optim.warmup_steps`: warmup_steps (20) exceeds steps (10)"
    );
    // `[teacher.model]` implies `teacher` without writing it.
    let m = err(BASE, &["teacher.kind=hf"]);
    assert!(m.starts_with("r.toml (default value, key not set): key `teacher.path`"), "{m}");
}

/// The loss chunk follows the vocabulary by a 128 MiB budget of f32 logits unless set:
/// 128 MiB / (4 B x 32,000) = 1,048 -> 1,024; / (4 B x 128,256) = 261 -> 256; a small
/// vocabulary stops at 16,384; 0 is refused by name.
#[test]
fn loss_chunk_is_sized_to_the_vocabulary_unless_set() {
    let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &[]).unwrap();
    assert_eq!(r.distill.chunk_tokens_for(32_000), 1024);
    assert_eq!(r.distill.chunk_tokens_for(128_256), 256);
    assert_eq!(r.distill.chunk_tokens_for(1024), 16384);
    assert_eq!(r.distill.chunk_tokens_for(4_000_000), 256);
    let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &["distill.chunk_tokens=300".to_string()]).unwrap();
    assert_eq!(r.distill.chunk_tokens_for(32_000), 300);
    let m = err(BASE, &["distill.chunk_tokens=0"]);
    assert!(m.contains("key `distill.chunk_tokens`: expected a positive integer, got 0"), "{m}");
}

/// An export the student cannot be written in is refused at load, naming the key, not after
/// training; the native formats of a hybrid are fine. `[qat] bits` must match the scheme.
#[test]
fn exports_and_qat_bits_are_checked_at_load() {
    let hybrid =
        with("d_ff = 64\n", "d_ff = 64\nlayer_pattern = \"AM\"\nn_layers = 2\n").replacen("n_layers = 1\n", "", 1);
    let e = err(&format!("{hybrid}\n[export]\nformats = [\"int8\", \"gguf-q4_0\"]\n"), &[]);
    assert!(
        e.contains("key `export.formats`: gguf-q4_0: cannot export this model as GGUF") && e.contains("Mamba-2"),
        "{e}"
    );
    let ok = format!("{hybrid}\n[export]\nformats = [\"int8\", \"int4\", \"hf\"]\n");
    Recipe::from_str_with(&ok, Path::new("r.toml"), &[]).unwrap();
    let e = err(BASE, &["student.model.window=16", "export.formats=[\"gguf-q8_0\"]"]);
    assert!(e.contains("export.formats") && e.contains("sliding window"), "{e}");
    let e = err(&format!("{BASE}\n[qat]\nscheme = \"q8_0\"\nbits = 4\n"), &[]);
    assert!(e.contains("key `qat.bits`: 4 bits, but scheme q8_0 has 8"), "{e}");
}

/// The shipped recipes load and validate (run from the repository root, as the README says);
/// those that name downloaded models are skipped when the files are absent.
#[test]
fn shipped_recipes_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = Vec::new();
    for e in std::fs::read_dir(root.join("recipes")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // Relative paths in a recipe are relative to the current directory: the repository.
        let text = text.replace("\"configs/", &format!("\"{}/configs/", root.display()));
        let text = text.replace("\"recipes/", &format!("\"{}/recipes/", root.display()));
        let text = text.replace("\"data/", &format!("\"{}/data/", root.display()));
        let text = text.replace("\"tests/", &format!("\"{}/tests/", root.display()));
        match Recipe::from_str_with(&text, &p, &[]) {
            Ok(_) => checked.push(p.file_name().unwrap().to_string_lossy().to_string()),
            Err(e) if text.contains("models/") || text.contains("runs/") => eprintln!("{}: skipped ({e})", p.display()),
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    for want in ["quickstart.toml", "quickstart-chat.toml", "chat-parquet.toml"] {
        assert!(checked.iter().any(|c| c == want), "{want} not checked: {checked:?}");
    }
}

#[test]
fn activation_checkpointing_keys() {
    let r = Recipe::from_str_with(BASE, Path::new("r.toml"), &[]).unwrap();
    assert_eq!(r.run.recompute_every(), None);
    for (set, want) in [("layers", Some(1)), ("every_n", Some(2))] {
        let ov = [format!("run.activation_checkpointing=\"{set}\"")];
        assert_eq!(Recipe::from_str_with(BASE, Path::new("r.toml"), &ov).unwrap().run.recompute_every(), want);
    }
    let ov = ["run.activation_checkpointing=\"every_n\"".into(), "run.checkpoint_every=4".into()];
    assert_eq!(Recipe::from_str_with(BASE, Path::new("r.toml"), &ov).unwrap().run.recompute_every(), Some(4));
    assert!(err(BASE, &["run.activation_checkpointing=\"all\""]).contains("unknown variant `all`"));
    assert!(err(BASE, &["run.checkpoint_every=0"]).contains("key `run.checkpoint_every`: expected a positive"));
    // The hidden-state loss reads block outputs under either kind of checkpointing.
    let ov = ["run.activation_checkpointing=\"every_n\"".into(), "distill.hidden.weight=1".into()];
    assert_eq!(Recipe::from_str_with(BASE, Path::new("r.toml"), &ov).unwrap().run.recompute_every(), Some(2));
}
