//! The catalogue of bad inputs (docs/hostile-inputs.md): each one through the real CLI, with
//! the error it must give (exit code 2, a message naming the file, key, line or tensor and
//! what was expected) and nothing half-written. The document and this table must agree: every
//! case's name and message appear in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use super::{load, opts, tiny_recipe, tmp};

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// What the message must contain.
    says: &'static str,
    /// A path that must not exist afterwards (nothing half-written).
    absent: Option<PathBuf>,
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn write(p: &Path, text: impl AsRef<[u8]>) -> PathBuf {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    p.to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the llama-gqa Hugging Face fixture, changed by `edit`.
fn hf(dir: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = dir.join(name);
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa"), &d);
    edit(&d);
    d
}

fn edit_file(p: &Path, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, f(b)).unwrap();
}

fn replace(p: &Path, from: &str, to: &str) {
    let t = std::fs::read_to_string(p).unwrap();
    assert!(t.contains(from), "{}: {from}", p.display());
    std::fs::write(p, t.replacen(from, to, 1)).unwrap();
}

/// safetensors bytes from `(name, dtype, shape, data)` with a hand-written header.
fn safetensors(tensors: &[(&str, &str, Vec<usize>, usize)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0;
    for (n, dt, shape, bytes) in tensors {
        header
            .insert(n.to_string(), serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [at, at + bytes]}));
        at += bytes;
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(vec![0u8; at]);
    out
}

fn cases(dir: &Path, done: &Path, cached: &Path) -> Vec<Case> {
    let recipe = |name: &str, text: String| write(&dir.join(format!("{name}.toml")), text);
    let base = |name: &str| tiny_recipe(dir, name, 8);
    let validate = |name: &str, text: String, extra: &[&str]| -> Vec<String> {
        let mut v = vec!["validate".to_string(), s(&recipe(name, text))];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let data = |name: &str, text: String| vec!["data".to_string(), s(&recipe(name, text))];
    let text_source = |name: &str, file: &Path, extra: &str| {
        base(name).replace("[data]\n", &format!("[data]\nsource = \"text\"\npaths = [\"{}\"]\n{extra}", file.display()))
    };
    let jsonl_source = |name: &str, file: &Path, extra: &str| {
        base(name)
            .replace("[data]\n", &format!("[data]\nsource = \"jsonl\"\npaths = [\"{}\"]\n{extra}", file.display()))
    };
    let logits = |d: &Path| vec!["logits".into(), "--model".into(), s(d), "--ids".into(), "1,2,3".into()];
    let docs: String =
        (0..60).map(|i| format!("Document number {i} tells a short story about a cat and a dog.\n\n")).collect();
    let good_txt = write(&dir.join("good.txt"), &docs);
    let mut c = Vec::new();
    let mut add = |name: &'static str, args: Vec<String>, says: &'static str, absent: Option<PathBuf>| {
        c.push(Case { name, args, says, absent })
    };

    // Recipes.
    add(
        "recipe: unknown key",
        validate("r1", base("r1").replace("lr = 1e-2\nmin_lr", "lrr = 1e-2\nmin_lr"), &[]),
        "unknown field `lrr`",
        None,
    );
    add(
        "recipe: wrong type",
        validate("r2", base("r2").replace("steps = 8", "steps = \"eight\""), &[]),
        "invalid type: string \"eight\", expected usize",
        None,
    );
    add(
        "recipe: out of range",
        validate("r3", base("r3") + "\n[distill]\nalpha = 1.5\n", &[]),
        "key `distill.alpha`",
        None,
    );
    add(
        "recipe: missing model key",
        validate("r4", base("r4").replace("d_model = 32\n", ""), &[]),
        "student.model.d_model",
        None,
    );
    add(
        "recipe: heads do not divide",
        validate("r5", base("r5").replace("n_kv_heads = 1", "n_kv_heads = 3"), &[]),
        "n_heads (4) must be divisible by n_kv_heads (3)",
        None,
    );
    add(
        "recipe: warmup past the end",
        validate(
            "r6",
            base("r6").replace(
                "warmup_steps = 5\nbatch_size = 8\nsteps = 8\n\n[checkpoint]",
                "warmup_steps = 50\nbatch_size = 8\nsteps = 8\n\n[checkpoint]",
            ),
            &[],
        ),
        "warmup_steps (50) exceeds steps (8)",
        None,
    );
    add(
        "recipe: bad enum value",
        validate("r7", base("r7").replace("[data]\n", "[data]\npacking = \"zip\"\n"), &[]),
        "unknown variant `zip`",
        None,
    );
    add("recipe: bad --set value", validate("r8", base("r8"), &["--set", "optim.lr=fast"]), "optim.lr", None);
    add(
        "recipe: --set of an unknown key",
        validate("r9", base("r9"), &["--set", "optim.nope=1"]),
        "unknown field `nope`",
        None,
    );
    add("recipe: --set without =", validate("r10", base("r10"), &["--set", "optim.lr"]), "--set", None);
    add(
        "recipe: missing file",
        vec!["validate".into(), s(&dir.join("no-such.toml"))],
        "no-such.toml: cannot read file",
        None,
    );
    add("recipe: not TOML", validate("r12", "[run\nname = 1".into(), &[]), "r12.toml", None);
    add(
        "recipe: QAT width",
        validate("r13", base("r13") + "\n[qat]\nenabled = true\nscheme = \"int4-g64\"\n", &[]),
        "[qat] scheme int4-g64 quantizes blocks of 64 inputs",
        None,
    );
    add(
        "recipe: GGUF of a hybrid",
        validate(
            "r14",
            base("r14").replace("tie_embeddings = true\n", "tie_embeddings = true\nlayer_pattern = \"AM\"\n")
                + "\n[export]\nformats = [\"gguf-q8_0\"]\n",
            &[],
        ),
        "cannot export this model as GGUF",
        None,
    );
    add(
        "recipe: teacher path missing",
        validate(
            "r15",
            base("r15").replace(
                "[teacher.model]",
                &format!("[teacher]\nkind = \"hf\"\npath = \"{}\"\n\n[teacher.model]", dir.join("nowhere").display()),
            ),
            &[],
        ),
        "nowhere",
        None,
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa");
    let hf_student = |name: &str, student: &str| {
        base(name).replace("[student.model]", &format!("[student]\n{student}\n\n[student.model]"))
    };
    add(
        "recipe: loaded student given a shape",
        validate("r16", hf_student("r16", &format!("init = \"hf\"\npath = \"{}\"", fixture.display())), &[]),
        "takes its shape from its files",
        None,
    );
    add(
        "recipe: GGUF student without a path",
        validate("r17", hf_student("r17", "init = \"gguf\""), &[]),
        "key `student.path`: required when student.init = \"gguf\"",
        None,
    );
    add(
        "recipe: unknown freeze group",
        validate("r18", hf_student("r18", "init = \"prune\"\nfreeze = [\"heads\"]"), &[]),
        "key `student.freeze`: \"heads\": expected",
        None,
    );
    // A GGUF whose vocabulary is SentencePiece's (not rebuilt as byte-level BPE).
    let gguf_fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/llama-gqa-q.gguf");
    let mut g = distill::export::gguf::Gguf::parse(&std::fs::read(&gguf_fixture).unwrap(), "x").unwrap();
    for (k, v) in g.kv.iter_mut() {
        if k == "tokenizer.ggml.model" {
            *v = distill::export::gguf::Value::Str("llama".into());
        }
    }
    let spm = write(&dir.join("spm.gguf"), g.to_bytes());
    add(
        "gguf: SentencePiece vocabulary",
        vec!["tokenizer".into(), s(&spm), "--out".into(), s(&dir.join("spm-tok.json"))],
        "tokenizer.ggml.model",
        Some(dir.join("spm-tok.json")),
    );

    // Data.
    let missing = dir.join("missing.txt");
    add(
        "data: missing file",
        data("d1", text_source("d1", &missing, "")),
        "missing.txt",
        Some(dir.join("d1/data/meta.json")),
    );
    let empty = write(&dir.join("empty.txt"), "");
    add(
        "data: empty corpus",
        data("d2", text_source("d2", &empty, "")),
        "empty.txt: only 0 documents in the input; need at least 2",
        Some(dir.join("d2/data/meta.json")),
    );
    let mut bad_utf8 = docs.clone().into_bytes();
    bad_utf8.extend(b"\n\nbroken \xff\xfe text here\n");
    let bad_utf8 = write(&dir.join("bad-utf8.txt"), bad_utf8);
    add(
        "data: invalid UTF-8 (strict)",
        data("d3", text_source("d3", &bad_utf8, "strict = true\n")),
        "bad-utf8.txt",
        Some(dir.join("d3/data/meta.json")),
    );
    let jl: String =
        (0..60).map(|i| format!("{{\"text\": \"Document {i} is about a cat who finds a dog.\"}}\n")).collect();
    let broken = write(&dir.join("broken.jsonl"), format!("{jl}{{\"text\": \"unterminated\n"));
    add(
        "data: broken JSONL line (strict)",
        data("d4", jsonl_source("d4", &broken, "strict = true\n")),
        "broken.jsonl:61",
        Some(dir.join("d4/data/meta.json")),
    );
    let nofield = write(&dir.join("nofield.jsonl"), format!("{jl}{{\"body\": \"no text field\"}}\n"));
    add(
        "data: JSONL without the field (strict)",
        data("d5", jsonl_source("d5", &nofield, "strict = true\n")),
        "nofield.jsonl:61",
        Some(dir.join("d5/data/meta.json")),
    );
    // Chat rows, templates and Parquet files.
    let chat_source = |name: &str, source: &str, file: &Path, extra: &str| {
        base(name).replace(
            "[data]\n",
            &format!("[data]\nsource = \"{source}\"\nformat = \"chat\"\npaths = [\"{}\"]\n{extra}", file.display()),
        )
    };
    let chats: String = (0..60)
        .map(|i| {
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Where is cat {i}?\"}}, {{\"role\": \"assistant\", \"content\": \"Cat {i} is in the garden.\"}}]}}\n"
            )
        })
        .collect();
    let good_chat = write(&dir.join("good-chat.jsonl"), &chats);
    let chatml = write(
        &dir.join("chatml.jinja"),
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}",
    );
    let bad_msg = write(
        &dir.join("bad-chat.jsonl"),
        format!("{chats}{{\"messages\": [{{\"role\": \"user\", \"content\": 3}}]}}\n"),
    );
    let with_template = |t: &Path| format!("chat_template = \"{}\"\nstrict = true\n", t.display());
    add(
        "data: malformed chat message (strict)",
        data("d8", chat_source("d8", "jsonl", &bad_msg, &with_template(&chatml))),
        "bad-chat.jsonl:61: `messages`[0] (user) has no string `content`",
        Some(dir.join("d8/data/meta.json")),
    );
    add(
        "data: chat rows without a template",
        data("d9", chat_source("d9", "jsonl", &good_chat, "")),
        "data.format = \"chat\" needs a chat template",
        Some(dir.join("d9/data/meta.json")),
    );
    let broken_t = write(&dir.join("broken.jinja"), "{% for m in messages %}{{ m.content }}");
    add(
        "data: chat template with a syntax error",
        data("d10", chat_source("d10", "jsonl", &good_chat, &with_template(&broken_t))),
        "broken.jinja: not a valid chat template",
        Some(dir.join("d10/data/meta.json")),
    );
    let spin = write(
        &dir.join("spin.jinja"),
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
    );
    add(
        "data: chat template that never ends (strict)",
        data("d11", chat_source("d11", "jsonl", &good_chat, &with_template(&spin))),
        "good-chat.jsonl:1: chat template (data.chat_template = ",
        Some(dir.join("d11/data/meta.json")),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
    add(
        "data: Parquet file with a crafted footer length",
        data("d12", chat_source("d12", "parquet", &fixtures.join("huge_footer.parquet"), &with_template(&chatml))),
        "huge_footer.parquet: corrupt or truncated Parquet file: its footer claims 2147483647 bytes",
        Some(dir.join("d12/data/meta.json")),
    );
    add(
        "data: Parquet file without the column",
        data(
            "d13",
            chat_source("d13", "parquet", &fixtures.join("chat.parquet"), &with_template(&chatml))
                .replace("format = \"chat\"", "format = \"chat\"\nmessages_field = \"conversation\""),
        ),
        "no column `conversation`; the file has columns: messages, id",
        Some(dir.join("d13/data/meta.json")),
    );
    add(
        "data: Parquet glob that matches nothing",
        data("d14", chat_source("d14", "parquet", &dir.join("shard-*.parquet"), &with_template(&chatml))),
        "shard-*.parquet`: no file matches",
        Some(dir.join("d14/data/meta.json")),
    );
    add(
        "recipe: packed documents with Mamba layers",
        validate(
            "r40",
            base("r40")
                .replace("[data]\n", "[data]\npacking = \"documents\"\n")
                .replace("tie_embeddings = true\n", "tie_embeddings = true\nlayer_pattern = \"AM\"\n"),
            &[],
        ),
        "key `data.packing`",
        None,
    );
    add(
        "data: everything filtered out",
        data("d6", text_source("d6", &good_txt, "") + "\n[data.filter]\nmin_chars = 100000\nmax_chars = 200000\n"),
        "no training documents left after filtering",
        Some(dir.join("d6/data/meta.json")),
    );
    let short = write(
        &dir.join("short.txt"),
        "A tiny story about a cat and a dog, nothing more than this line.\n\nAnother tiny story about a dog and a cat, and that is all.\n\nA third one, short too, about a bird that sings in the morning.\n",
    );
    let run_args = |name: &str, text: String| vec!["run".to_string(), s(&recipe(name, text)), "--quiet".to_string()];
    add(
        "data: fewer tokens than one row",
        run_args(
            "d7",
            text_source("d7", &short, "")
                .replace("valid_fraction = 0.1", "valid_fraction = 0.34")
                .replace("seq_len = 32", "seq_len = 64"),
        ),
        "fewer than one row of data.seq_len + 1 = 65",
        Some(dir.join("d7/teacher")),
    );

    // Tokenizers.
    add(
        "tokenizer: missing file",
        validate(
            "t1",
            base("t1").replace(
                "[tokenizer]\n",
                &format!("[tokenizer]\nkind = \"file\"\npath = \"{}\"\n", dir.join("no-tok.json").display()),
            ),
            &[],
        ),
        "no-tok.json",
        None,
    );
    let bad_tok = write(&dir.join("bad-tok.json"), "{\"model\": 3}");
    add(
        "tokenizer: malformed tokenizer.json",
        data(
            "t2",
            base("t2")
                .replace("[tokenizer]\n", &format!("[tokenizer]\nkind = \"file\"\npath = \"{}\"\n", bad_tok.display())),
        ),
        "bad-tok.json: not a valid tokenizer.json",
        Some(dir.join("t2/data/meta.json")),
    );
    // The llama-gqa tokenizer with a SentencePiece-style split (Llama 2, Mistral v0.1).
    let fixture_tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa/tokenizer.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture_tok).unwrap()).unwrap();
    j["pre_tokenizer"] =
        serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false});
    let metaspace = write(&dir.join("metaspace-tok.json"), serde_json::to_vec(&j).unwrap());
    add(
        "export: GGUF with a split llama.cpp does not implement",
        run_args(
            "t3",
            base("t3").replace(
                "[tokenizer]\n",
                &format!("[tokenizer]\nkind = \"file\"\npath = \"{}\"\n", metaspace.display()),
            ) + "\n[export]\nformats = [\"gguf-f16\"]\n",
        ),
        "cannot write this tokenizer to GGUF: pre-tokenizer",
        Some(dir.join("t3")),
    );
    let small =
        hf(dir, "small-vocab", |d| replace(&d.join("config.json"), "\"vocab_size\": 1024", "\"vocab_size\": 100"));
    add(
        "teacher: config.json vocabulary smaller than the weights",
        logits(&small),
        "tensor `model.embed_tokens.weight` has shape [1024, 64], expected [100, 64]",
        None,
    );
    let small_tok = hf(dir, "small-tok", |d| {
        // The weights for 1024 tokens under a config that says so, but the embedding cut to
        // 100 rows: the loader must refuse the 1024-token tokenizer for a 100-row model.
        replace(&d.join("config.json"), "\"vocab_size\": 1024", "\"vocab_size\": 100");
        let st = std::fs::read(d.join("model.safetensors")).unwrap();
        let t = safetensors::SafeTensors::deserialize(&st).unwrap();
        let mut keep: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
        let mut cut: Vec<Vec<u8>> = Vec::new();
        for (n, v) in t.tensors() {
            if n == "model.embed_tokens.weight" || n == "lm_head.weight" {
                cut.push(v.data()[..100 * 64 * 4].to_vec());
            }
            keep.push((n, v));
        }
        let mut views = Vec::new();
        let mut it = cut.iter();
        for (n, v) in keep {
            if n == "model.embed_tokens.weight" || n == "lm_head.weight" {
                views.push((
                    n,
                    safetensors::tensor::TensorView::new(v.dtype(), vec![100, 64], it.next().unwrap()).unwrap(),
                ));
            } else {
                views.push((n, v));
            }
        }
        std::fs::write(d.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    });
    add(
        "tokenizer: vocabulary larger than the model",
        logits(&small_tok),
        "tokenizer.json has 1024 tokens but the model's vocab_size is 100",
        None,
    );

    // Teacher folders.
    let noconfig = hf(dir, "no-config", |d| std::fs::remove_file(d.join("config.json")).unwrap());
    add("teacher: missing config.json", logits(&noconfig), "not a model: expected a run directory", None);
    let arch =
        hf(dir, "gpt2", |d| replace(&d.join("config.json"), "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""));
    add("teacher: unsupported architecture", logits(&arch), "gpt2", None);
    let badjson = hf(dir, "bad-json", |d| {
        write(&d.join("config.json"), "{ not json");
    });
    add("teacher: config.json not JSON", logits(&badjson), "config.json", None);
    let huge =
        hf(dir, "huge", |d| replace(&d.join("config.json"), "\"hidden_size\": 64", "\"hidden_size\": 1099511627776"));
    add("teacher: absurd shapes in config.json", logits(&huge), "hidden_size", None);
    let trunc = hf(dir, "truncated", |d| edit_file(&d.join("model.safetensors"), |b| b[..b.len() / 2].to_vec()));
    add("teacher: truncated safetensors", logits(&trunc), "model.safetensors: not a safetensors file", None);
    let past = hf(dir, "past-end", |d| {
        // A consistent header whose offsets claim 1 GB of data that the file does not have.
        let mut b = safetensors(&[("model.norm.weight", "F32", vec![256 * 1024 * 1024], 1 << 30)]);
        b.truncate(b.len() - (1 << 30) + 256);
        write(&d.join("model.safetensors"), b);
    });
    add(
        "teacher: header offsets past the end",
        logits(&past),
        "model.safetensors: not a safetensors file: incomplete metadata, file not fully covered",
        None,
    );
    let missing_t = hf(dir, "missing-tensor", |d| {
        write(&d.join("model.safetensors"), safetensors(&[("model.norm.weight", "F32", vec![64], 256)]));
    });
    add("teacher: missing tensor", logits(&missing_t), "missing tensor `model.layers.1.input_layernorm.weight`", None);
    let wrong = hf(dir, "wrong-shape", |d| {
        replace(&d.join("config.json"), "\"intermediate_size\": 128", "\"intermediate_size\": 96")
    });
    add("teacher: tensor of the wrong shape", logits(&wrong), "has shape [128, 64], expected [96, 64]", None);
    let extra = hf(dir, "extra-tensor", |d| {
        replace(&d.join("config.json"), "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1")
    });
    add(
        "teacher: tensor the model does not use",
        logits(&extra),
        "is not used by the model that config.json describes",
        None,
    );
    // The header's first F32 turned into I32 (same size): a tensor of a dtype we do not read.
    let dtype = hf(dir, "int-dtype", |d| {
        edit_file(&d.join("model.safetensors"), |b| {
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let header = String::from_utf8(b[8..8 + n].to_vec()).unwrap().replacen("\"F32\"", "\"I32\"", 1);
            [&b[..8], header.as_bytes(), &b[8 + n..]].concat()
        })
    });
    add("teacher: unsupported dtype", logits(&dtype), "has dtype I32; supported: F32, F16, BF16", None);

    // Runs, checkpoints, caches and exports.
    add("cli: not a run directory", vec!["resume".into(), s(&dir.join("nothing"))], "not a run directory", None);
    add(
        "cli: unknown export format",
        vec!["export".into(), s(done), "--format".into(), "onnx".into()],
        "--format: expected int8, int4, hf, gguf-f16, gguf-q8_0 or gguf-q4_0, got \"onnx\"",
        None,
    );
    add(
        "cli: unknown PTQ scheme",
        vec!["eval".into(), s(done), "--ptq".into(), "q5_1".into()],
        "--ptq: expected q8_0, q4_0 or int4-g<N>",
        None,
    );
    add(
        "cli: token id outside the vocabulary",
        vec!["logits".into(), "--model".into(), s(done), "--ids".into(), "1,99999".into()],
        "token id 99999 is outside the model's vocabulary",
        None,
    );
    let gguf = write(&dir.join("bad.gguf"), b"GGUF\x03\x00\x00\x00\x01");
    add(
        "export: truncated GGUF",
        vec!["eval".into(), s(done), "--exported".into(), s(&gguf)],
        "bad.gguf: truncated",
        None,
    );
    let crafted = {
        let mut b = b"GGUF\x03\x00\x00\x00".to_vec();
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(b"keys");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend((1u64 << 62).to_le_bytes());
        write(&dir.join("crafted.gguf"), b)
    };
    add(
        "export: GGUF array count past the file",
        vec!["eval".into(), s(done), "--exported".into(), s(&crafted)],
        "key `keys`: 4611686018427387904 elements cannot fit",
        None,
    );
    let ck_run = dir.join("ck-flip");
    copy_dir(done, &ck_run);
    for ck in std::fs::read_dir(ck_run.join("student/checkpoints")).unwrap().flatten() {
        if ck.path().is_dir() {
            edit_file(&ck.path().join("optimizer.safetensors"), |mut b| {
                let n = b.len();
                b[n / 2] ^= 1;
                b
            });
        }
    }
    std::fs::remove_dir_all(ck_run.join("student/final")).unwrap();
    add(
        "checkpoint: flipped byte",
        vec!["resume".into(), s(&ck_run), "--quiet".into()],
        "optimizer.safetensors: checksum does not match MANIFEST",
        Some(ck_run.join("student/final")),
    );
    let ck_trunc = dir.join("ck-trunc");
    copy_dir(done, &ck_trunc);
    for ck in std::fs::read_dir(ck_trunc.join("student/checkpoints")).unwrap().flatten() {
        if ck.path().is_dir() {
            edit_file(&ck.path().join("model.bpk"), |b| b[..b.len() / 3].to_vec());
        }
    }
    std::fs::remove_dir_all(ck_trunc.join("student/final")).unwrap();
    add(
        "checkpoint: truncated",
        vec!["resume".into(), s(&ck_trunc), "--quiet".into()],
        "model.bpk: checksum does not match MANIFEST",
        Some(ck_trunc.join("student/final")),
    );
    let shape = dir.join("ck-shape");
    copy_dir(done, &shape);
    std::fs::remove_dir_all(shape.join("student/final")).unwrap();
    replace(&shape.join("recipe.resolved.toml"), "d_ff = 64", "d_ff = 96");
    add(
        "checkpoint: from another shape",
        vec!["resume".into(), s(&shape), "--quiet".into()],
        "does not fit the model the recipe describes",
        Some(shape.join("student/final")),
    );
    let mj = dir.join("model-json");
    copy_dir(&done.join("student/final"), &mj);
    replace(&mj.join("model.json"), "\"n_heads\": 4", "\"n_heads\": 0");
    add(
        "model.json: impossible shape",
        vec!["logits".into(), "--model".into(), s(&mj), "--ids".into(), "1,2".into()],
        "model.json",
        None,
    );
    let mb = dir.join("model-bpk");
    copy_dir(&done.join("student/final"), &mb);
    edit_file(&mb.join("model.bpk"), |mut b| {
        b[100] ^= 0x10;
        b
    });
    add(
        "model: weights do not match model.json",
        vec!["logits".into(), "--model".into(), s(&mb), "--ids".into(), "1,2".into()],
        "model.bpk: checksum does not match model.json",
        None,
    );

    // The teacher cache.
    let shard = |run: &Path| -> PathBuf {
        let c = run.join("teacher_cache");
        std::fs::read_dir(&c)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "bin"))
            .unwrap()
    };
    // A copy of the cached run without its student, its cache damaged by `damage`: resuming
    // must refuse the cache, not train on it.
    let damaged = |name: &str, damage: &dyn Fn(&Path)| -> (Vec<String>, Option<PathBuf>) {
        let run = dir.join(name);
        copy_dir(cached, &run);
        std::fs::remove_dir_all(run.join("student")).ok();
        damage(&run);
        (vec!["resume".into(), s(&run), "--quiet".into()], Some(run.join("student/final")))
    };
    let (args, absent) = damaged("cache-flip", &|r| {
        edit_file(&shard(r), |mut b| {
            let n = b.len();
            b[n - 7] ^= 0x20;
            b
        })
    });
    add("cache: flipped byte in a shard", args, "corrupt teacher-cache shard (checksum mismatch)", absent);
    let (args, absent) = damaged("cache-trunc", &|r| edit_file(&shard(r), |b| b[..b.len() / 2].to_vec()));
    add("cache: truncated shard", args, "shard-00001.bin: corrupt teacher-cache shard", absent);
    let (args, absent) = damaged("cache-version", &|r| {
        replace(&r.join("teacher_cache/cache.json"), "\"format_version\": ", "\"format_version\": 9")
    });
    add("cache: wrong format version", args, "made for format version 92", absent);
    // The rows field of the fixed header: an absurd count.
    let (args, absent) = damaged("cache-header", &|r| {
        edit_file(&shard(r), |mut b| {
            b[48..56].fill(0x7f);
            b
        })
    });
    add("cache: crafted header sizes", args, "shard-00001.bin: corrupt teacher-cache shard", absent);
    // On-policy distillation and teacher-made data.
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/templates/smollm2.jinja");
    let chat = |name: &str, packing: &str| {
        base(name).replace(
            "[data]\n",
            &format!(
                "[data]\nsynthetic_format = \"chat\"\nchat_template = \"{}\"\npacking = \"{packing}\"\n",
                template.display()
            ),
        ) + "\n[distill.on_policy]\nfraction = 0.5\nmax_new_tokens = 8\n"
    };
    add(
        "on-policy: with a teacher cache",
        validate("op1", chat("op1", "doc_per_row") + "\n[teacher]\nlogits = \"cache\"\n", &[]),
        "which a teacher cache (the teacher's logits of the dataset's text, computed beforehand) cannot hold",
        None,
    );
    add(
        "on-policy: plain text rows",
        validate("op2", base("op2") + "\n[distill.on_policy]\nfraction = 0.5\nmax_new_tokens = 8\n", &[]),
        "on-policy distillation continues prompts, and plain text has none",
        None,
    );
    add(
        "on-policy: rows packed across conversations",
        validate("op3", chat("op3", "concat"), &[]),
        "a row must hold one conversation: set data.packing = \"doc_per_row\"",
        None,
    );
    add(
        "on-policy: more new tokens than a row",
        validate("op4", chat("op4", "doc_per_row").replace("max_new_tokens = 8", "max_new_tokens = 4096"), &[]),
        "key `distill.on_policy.max_new_tokens`: expected 1 to data.seq_len (32) tokens, got 4096",
        None,
    );
    add(
        "synth: a teacher the run pretrains",
        vec!["synth".into(), s(&recipe("sy1", base("sy1") + "\n[synth]\nmax_prompts = 4\n"))],
        "synth needs a teacher that exists (\"hf\", \"gguf\" or \"checkpoint\")",
        Some(dir.join("sy1/synth")),
    );
    add(
        "synth: zero rows per shard",
        validate("sy2", base("sy2") + "\n[synth]\nshard_rows = 0\n", &[]),
        "key `synth.shard_rows`: expected at least 1",
        None,
    );
    // A folder another synth job wrote (other settings): refused, nothing overwritten.
    let with_teacher = |name: &str, temperature: &str| {
        let text = base(name).replace("vocab_size = 320\n", "kind = \"teacher\"\n")
            + &format!(
                "\n[teacher]\nkind = \"checkpoint\"\npath = \"{}\"\n\n[synth]\nmax_prompts = 4\nmax_new_tokens = 4\ntemperature = {temperature}\nout = \"{}\"\n",
                done.join("teacher/final").display(),
                dir.join("sy-shared").display()
            );
        recipe(name, text)
    };
    let first =
        Command::new(env!("CARGO_BIN_EXE_distill")).args(["synth", &s(&with_teacher("sy3a", "0.7"))]).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    add(
        "synth: a folder another job wrote",
        vec!["synth".into(), s(&with_teacher("sy3b", "0.2"))],
        "written by another synth job (it differs in `settings.temperature`): remove the folder, or set synth.out to another",
        None,
    );
    // Files that are not files, or far too large: refused from their metadata, before any
    // read (a FIFO would block the open, a device never ends).
    let fifo = dir.join("fifo.toml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    add(
        "recipe: /dev/zero",
        vec!["validate".into(), "/dev/zero".into()],
        "/dev/zero: is a device, expected a regular file",
        None,
    );
    add(
        "recipe: a FIFO",
        vec!["validate".into(), s(&fifo)],
        "fifo.toml: is a FIFO (named pipe), expected a regular file",
        None,
    );
    let folder = dir.join("folder.toml");
    std::fs::create_dir_all(&folder).unwrap();
    add(
        "recipe: a directory",
        vec!["validate".into(), s(&folder)],
        "folder.toml: is a directory, expected a regular file",
        None,
    );
    let sparse = dir.join("sparse.toml");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    add(
        "recipe: a 1 GB sparse file",
        vec!["validate".into(), s(&sparse)],
        "sparse.toml: 1073741824 bytes, more than the 268435456 this kind of file may hold",
        None,
    );
    let urandom = dir.join("urandom.gguf");
    std::os::unix::fs::symlink("/dev/urandom", &urandom).unwrap();
    add(
        "gguf: a link to /dev/urandom",
        vec!["logits".into(), "--model".into(), s(&urandom), "--ids".into(), "1".into()],
        "urandom.gguf: is a device, expected a regular file",
        None,
    );
    let data_dir = dir.join("corpus.jsonl");
    std::fs::create_dir_all(&data_dir).unwrap();
    add(
        "data: a path that is a directory",
        data("d-dir", jsonl_source("d-dir", &data_dir, "")),
        "corpus.jsonl: is a directory, expected a regular file",
        Some(dir.join("d-dir/data/meta.json")),
    );
    let hf_fifo = hf(dir, "hf-fifo-tok", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap();
        assert!(Command::new("mkfifo").arg(d.join("tokenizer.json")).status().unwrap().success());
    });
    add(
        "teacher folder: tokenizer.json a FIFO",
        data(
            "r-fifo",
            base("r-fifo")
                .replace(
                    "[teacher.model]",
                    &format!("[teacher]\nkind = \"hf\"\npath = \"{}\"\n\n[teacher.model]", hf_fifo.display()),
                )
                .replace("[tokenizer]\nvocab_size = 320", "[tokenizer]\nkind = \"teacher\""),
        ),
        "tokenizer.json: is a FIFO (named pipe), expected a regular file",
        None,
    );
    // Sizes from a file, held against what the files hold before anything of that size exists.
    let deep = hf(dir, "hf-deep", |d| {
        replace(&d.join("config.json"), "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000000")
    });
    add(
        "teacher folder: config.json of 1e8 layers",
        logits(&deep),
        "missing tensor `model.layers.99999999.input_layernorm.weight`: the config says 100000000 layers (n_layers / num_hidden_layers / block_count), and the weights hold no layer 99999999",
        None,
    );
    let wide = dir.join("wide-model");
    copy_dir(&done.join("student/final"), &wide);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(wide.join("model.json")).unwrap()).unwrap();
    v["config"]["vocab_size"] = serde_json::json!(u64::MAX);
    std::fs::write(wide.join("model.json"), v.to_string()).unwrap();
    add("model.json: vocab_size 2^64 - 1", logits(&wide), "wide-model/model.json: describes a model of at least", None);
    // Flags.
    for (name, t) in
        [("generate: a negative temperature", "--temperature=-1"), ("generate: a NaN temperature", "--temperature=NaN")]
    {
        add(
            name,
            vec!["generate".into(), s(done), "--prompt".into(), "hi".into(), t.into()],
            "--temperature: expected a finite value >= 0 (0 = greedy)",
            None,
        );
    }
    add(
        "logits: --teacher of a single model",
        vec![
            "logits".into(),
            "--model".into(),
            s(&done.join("student/final")),
            "--ids".into(),
            "1".into(),
            "--teacher".into(),
        ],
        "student/final is a single model, not a run directory: there is no teacher to choose",
        None,
    );
    add(
        "recipe: --set with a line break",
        validate("r-nl", base("r-nl"), &["--set", "run.name=x\n[optim]\nsteps = 1"]),
        "a line break in an override; one KEY=VALUE per --set",
        None,
    );
    let bad_prompts = write(&dir.join("prompts.jsonl"), "\"fine\"\n{\"prompt\": 3}\n");
    add(
        "generate: a malformed prompts file",
        vec!["generate".into(), s(done), "--prompts".into(), s(&bad_prompts)],
        "prompts.jsonl:2: expected a `prompt` string or a `messages` list (one of them)",
        None,
    );
    c
}

#[test]
fn every_bad_input_is_a_clear_error() {
    let dir = tmp("hostile");
    let stop = AtomicBool::new(false);
    // A finished run and a finished run on a cached teacher, for the cases that damage them.
    distill::pipeline::run(&load(&tiny_recipe(&dir, "done", 8), &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let cached_text = tiny_recipe(&dir, "cached", 8) + "\n[teacher]\nlogits = \"cache\"\n\n[cache]\nk = 8\n";
    distill::pipeline::run(&load(&cached_text, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let cases = cases(&dir, &dir.join("done"), &dir.join("cached"));
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/hostile-inputs.md")).unwrap();
    let mut failures = Vec::new();
    for c in &cases {
        let out = Command::new(env!("CARGO_BIN_EXE_distill")).args(&c.args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| l.starts_with("error")).unwrap_or("").to_string();
        if out.status.code() != Some(2) || !err.contains(c.says) {
            failures.push(format!("{}: exit {:?}, wanted 2 and {:?}; got: {err}", c.name, out.status.code(), c.says));
        }
        if let Some(p) = &c.absent
            && p.exists()
        {
            failures.push(format!("{}: {} was written", c.name, p.display()));
        }
        if !doc.contains(c.name) || !doc.contains(c.says) {
            failures.push(format!("{}: not in docs/hostile-inputs.md as `{}` ({first})", c.name, c.says));
        }
        eprintln!("| {} | `{}` |", c.name, first);
    }
    assert!(cases.len() >= 40, "{} cases", cases.len());
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    std::fs::remove_dir_all(&dir).ok();
}
