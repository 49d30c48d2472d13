//! Property-based fuzzing of every parser of a file a stranger may hand us (the nightly-only
//! cargo-fuzz is not available): valid inputs mutated at random (bytes flipped, overwritten,
//! truncated, inserted) and plain random bytes. The property: an `Ok` or an input error (exit
//! 2), never a panic, never an allocation sized from an unchecked field (a panic or an abort
//! would fail the test). `DISTILL_FUZZ_CASES` sets the cases per target (default 1000; the
//! file-backed targets run a quarter of that). The shard decoder's fuzz test lives beside it
//! (`teacher::cache::format`), as it is private there.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use proptest::prelude::*;

use crate::error::Error;

fn cases(share: u32) -> ProptestConfig {
    let n = std::env::var("DISTILL_FUZZ_CASES").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1000);
    ProptestConfig { cases: (n / share).max(1), failure_persistence: None, ..ProptestConfig::default() }
}

/// A mutation of a byte string: each edit at a position taken modulo the length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    /// Overwrite 8 bytes with a little-endian u64 (sizes, counts, offsets).
    Word(usize, u64),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 40), any::<u64>()])
            .prop_map(|(i, w)| Edit::Word(i, w)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
    ]
}

/// Edits confined to the first `window` bytes when given (a header), else anywhere.
fn mutate(mut b: Vec<u8>, edits: &[Edit], window: Option<usize>) -> Vec<u8> {
    for e in edits {
        let n = window.unwrap_or(b.len()).min(b.len()).max(1);
        match e {
            Edit::Flip(i, x) if !b.is_empty() => b[i % n] ^= x,
            Edit::Set(i, x) if !b.is_empty() => b[i % n] = *x,
            Edit::Word(i, w) if b.len() >= 8 => {
                let at = (i % n).min(b.len() - 8);
                b[at..at + 8].copy_from_slice(&w.to_le_bytes());
            }
            Edit::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Edit::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            _ => {}
        }
    }
    b
}

/// An error of the kind a user's bad file must give.
fn input_error(e: &Error) -> bool {
    e.exit_code() == 2
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("distill-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A small valid GGUF (the llama-gqa fixture as Q4_0), made once.
fn gguf_bytes() -> &'static [u8] {
    static G: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        use crate::export::gguf_model::{GgufQuant, Vocab, to_gguf};
        let dir = fixture("hf/llama-gqa");
        let (m, tok) = crate::teacher::hf::load(&dir, &Device::flex(), burn::tensor::DType::F32).unwrap();
        let j: serde_json::Value = crate::util::read_json(&dir.join("tokenizer.json")).unwrap();
        let v = Vocab::from_tokenizer_json(&j, 1024, tok.eos_id, tok.bos_id, "t").unwrap();
        to_gguf(&m, GgufQuant::Q4_0, true, true, v).unwrap().to_bytes()
    })
}

proptest! {
    #![proptest_config(cases(1))]

    /// GGUF: the reader of `distill eval --exported` / `logits --model x.gguf`; mutations in
    /// the header and metadata (where sizes live), and anywhere.
    #[test]
    fn gguf_reader(edits in proptest::collection::vec(edit(), 1..6), header in any::<bool>()) {
        let b = mutate(gguf_bytes().to_vec(), &edits, header.then_some(4096));
        if let Err(e) = crate::export::gguf::Gguf::parse(&b, "f.gguf") {
            prop_assert!(input_error(&e) && e.to_string().starts_with("f.gguf: "), "{e}");
        }
    }

    #[test]
    fn gguf_reader_random_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut g = b"GGUF\x03\x00\x00\x00".to_vec();
        g.extend(b);
        if let Err(e) = crate::export::gguf::Gguf::parse(&g, "f.gguf") {
            prop_assert!(input_error(&e), "{e}");
        }
    }

    /// A recipe: the TOML parser, serde, `--set`, and validation.
    #[test]
    fn recipe_parser(edits in proptest::collection::vec(edit(), 1..4)) {
        let text = std::fs::read("recipes/quickstart.toml").unwrap();
        let text = String::from_utf8_lossy(&mutate(text, &edits, None)).into_owned();
        if let Err(e) = crate::recipe::Recipe::from_str_with(&text, Path::new("r.toml"), &[]) {
            prop_assert!(input_error(&e), "{e}");
        }
    }
}

proptest! {
    #![proptest_config(cases(4))]

    /// A Hugging Face folder's safetensors (its header holds every dtype, shape and offset):
    /// opened, and every tensor read, as loading a teacher does.
    #[test]
    fn safetensors_reader(edits in proptest::collection::vec(edit(), 1..4), header in any::<bool>()) {
        use crate::model::init::WeightSource;
        let d = tmp("st");
        let b = std::fs::read(fixture("hf/llama-gqa/model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), mutate(b, &edits, header.then_some(2048))).unwrap();
        match crate::teacher::hf::HfWeights::open(&d) {
            Err(e) => prop_assert!(input_error(&e), "{e}"),
            Ok(w) => {
                for name in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] {
                    if let Err(e) = w.get(name) {
                        prop_assert!(input_error(&e), "{e}");
                    }
                }
            }
        }
    }

    /// model.json (a model directory's config and checksum) and its weights.
    #[test]
    fn model_json(edits in proptest::collection::vec(edit(), 1..4)) {
        let d = model_dir();
        let dir = tmp("mj");
        std::fs::copy(d.join("model.bpk"), dir.join("model.bpk")).unwrap();
        let j = std::fs::read(d.join("model.json")).unwrap();
        std::fs::write(dir.join("model.json"), mutate(j, &edits, None)).unwrap();
        if let Err(e) = crate::model::store::load(&dir, &Device::flex()) {
            prop_assert!(input_error(&e), "{e}");
        }
    }

    /// A checkpoint's MANIFEST and state.json (its weights are covered by the MANIFEST's
    /// checksums).
    #[test]
    fn checkpoint_manifest(edits in proptest::collection::vec(edit(), 1..4), which in 0usize..2) {
        let (src, model) = checkpoint_dir();
        let dir = tmp("ck");
        for f in ["model.bpk", "optimizer.safetensors", "state.json", "MANIFEST"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let f = ["MANIFEST", "state.json"][which];
        let b = std::fs::read(dir.join(f)).unwrap();
        std::fs::write(dir.join(f), mutate(b, &edits, None)).unwrap();
        let o = crate::train::config::OptimSection::default();
        if let Err(e) = crate::train::checkpoint::load(&dir, model.clone(), &o, &Device::flex().autodiff()) {
            prop_assert!(input_error(&e) || e.to_string().contains("state.json"), "{e}");
        }
    }
}

fn tiny() -> crate::model::DecoderConfig {
    crate::model::DecoderConfig { vocab_size: 40, shape: crate::model::ModelShape::for_tests(16, 1, 2, 1, 32) }
}

/// A saved model directory, made once.
fn model_dir() -> PathBuf {
    static D: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let d = tmp("model-src");
        crate::model::store::save(&d, &tiny().init(1, &Device::flex()), "tok").unwrap();
        d
    })
    .clone()
}

/// A checkpoint directory and a model to load it into, made once.
fn checkpoint_dir() -> (PathBuf, crate::model::Decoder) {
    static D: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let ad = Device::flex().autodiff();
    let model = tiny().init(1, &ad);
    let d = D.get_or_init(|| {
        let d = tmp("ck-src");
        let o = crate::train::config::OptimSection::default();
        let st = crate::train::checkpoint::TrainState::start();
        crate::train::checkpoint::save(&d, &model, &crate::train::adamw::AdamW::new(&o), &st, 2).unwrap();
        d.join("step-00000000")
    });
    (d.clone(), model)
}
