//! A llama.cpp GGUF file's tokenizer as a Hugging Face `tokenizer.json` that gives llama.cpp's
//! token ids: the file's byte-level BPE (`tokenizer.ggml.model = "gpt2"`), its vocabulary and
//! merges, and the split llama.cpp applies for its `tokenizer.ggml.pre` (`llm_tokenizer_bpe` in
//! llama.cpp's `src/llama-vocab.cpp`), spelled as each family's own tokenizer.json spells it.
//!
//! - Splits: llama.cpp applies a pre-tokenizer's regexes one after the other, each cutting the
//!   pieces of the one before into its matches and the text between them, which is `Split`
//!   with `Isolated` behaviour. `default` (also what llama.cpp uses when the key is missing) is
//!   not GPT-2's split but a cascade of four regexes of its own.
//! - No normalizer: llama.cpp normalizes nothing for these splits (Qwen2's tokenizer.json has
//!   NFC, which llama.cpp's converter drops), so text not in NFC tokenizes as llama.cpp's does.
//! - Special tokens: control and unknown tokens become `special` added tokens, user-defined
//!   ones plain added tokens (each also in the BPE vocabulary, so its id is the file's), so that
//!   `tokenizers` matches them whole in the text before the split. That is llama.cpp with
//!   `parse_special = true`. With `parse_special = false` (node-llama-cpp's `tokenize(text,
//!   false)`, `scripts/llama-cpp/tokenize.mjs`) llama.cpp still matches user-defined tokens but
//!   not control ones: `tokenizers` with `encode_special_tokens` set. llama.cpp tries special
//!   tokens longest first, `tokenizers` leftmost first: only overlapping special tokens (one
//!   starting inside another) can tell them apart.
//! - BOS/EOS: when llama.cpp adds them to a text (`add_special`), a `TemplateProcessing`
//!   post-processor adds them, as Llama 3's tokenizer.json adds BOS.
//!
//! Every count comes from the arrays the file holds; ids read from keys are checked against them.
//! Read against the llama.cpp that node-llama-cpp 3.22.1 bundles (scripts/llama-cpp), which
//! scripts/gguf_tokenizer_in_check.py compares with.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::export::gguf::{Gguf, Value};
use crate::export::gguf_model::{LLAMA3_SPLIT, QWEN2_SPLIT};

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const TYPES: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";
const BOS: &str = "tokenizer.ggml.bos_token_id";
const EOS: &str = "tokenizer.ggml.eos_token_id";
const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const CHAT_TEMPLATE: &str = "tokenizer.chat_template";

// llama.cpp's token types (`llama_token_type`).
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The `tokenizer.ggml.pre` values rebuilt, as the refusal of any other names them.
pub const SUPPORTED_PRE: [&str; 5] = ["gpt-2", "llama-bpe", "qwen2", "smollm", "default"];

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT` regexes, applied in this order.
const DEFAULT_SPLITS: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    "[0-9][0-9][0-9]",
];

/// How llama.cpp tokenizes for one `tokenizer.ggml.pre`.
struct Pre {
    name: String,
    /// The Hugging Face pre-tokenizer.
    json: Json,
    /// llama.cpp takes a piece that is a whole token as that token, merges or not.
    ignore_merges: bool,
    /// Whether llama.cpp adds BOS when the file does not say.
    add_bos: bool,
}

fn pre_of(g: &Gguf, what: &str) -> Result<Pre> {
    let name = match g.get(PRE) {
        // llama.cpp's fallback, with a warning that generation quality will suffer.
        None => "default",
        Some(Value::Str(s)) => s.as_str(),
        Some(v) => return Err(wrong_type(what, PRE, v, "a string")),
    };
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    let seq = |steps: Vec<Json>| json!({"type": "Sequence", "pretokenizers": steps});
    let (json, ignore_merges, add_bos) = match name {
        // ByteLevel's own regex is GPT-2's.
        "gpt-2" => (byte_level(true), false, false),
        "llama-bpe" => (seq(vec![split(LLAMA3_SPLIT), byte_level(false)]), true, true),
        "qwen2" => (seq(vec![split(QWEN2_SPLIT), byte_level(false)]), false, false),
        // llama.cpp: `\p{N}`, then GPT-2's regex; SmolLM2's tokenizer.json: the same as Digits.
        "smollm" => (seq(vec![json!({"type": "Digits", "individual_digits": true}), byte_level(true)]), false, false),
        "default" => (seq(DEFAULT_SPLITS.iter().map(|r| split(r)).chain([byte_level(false)]).collect()), false, false),
        _ => {
            return Err(Error::input(format!(
                "{what}: {PRE} is {name:?}: the llama.cpp pre-tokenizers rebuilt as a tokenizer.json are {}",
                SUPPORTED_PRE.map(|p| format!("{p:?}")).join(", ")
            )));
        }
    };
    Ok(Pre { name: name.to_string(), json, ignore_merges, add_bos })
}

fn wrong_type(what: &str, key: &str, v: &Value, expected: &str) -> Error {
    let mut shown = format!("{v:?}");
    if shown.len() > 60 {
        shown = format!("{}...", shown.chars().take(60).collect::<String>());
    }
    Error::input(format!("{what}: {key} is {shown}, expected {expected}"))
}

fn strs<'a>(g: &'a Gguf, key: &str, what: &str) -> Result<&'a [String]> {
    match g.get(key) {
        Some(Value::Strs(v)) => Ok(v),
        Some(v) => Err(wrong_type(what, key, v, "an array of strings")),
        None => Err(Error::input(format!("{what}: no {key} (an array of strings)"))),
    }
}

/// The tokens by id, with llama.cpp's name for an empty one; a token twice is refused, as
/// llama.cpp refuses it (one string, one id).
fn tokens(g: &Gguf, what: &str) -> Result<Vec<String>> {
    let raw = strs(g, TOKENS, what)?;
    let tokens: Vec<String> =
        raw.iter().enumerate().map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.clone() }).collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if let Some(j) = seen.insert(t, i) {
            return Err(Error::input(format!(
                "{what}: {TOKENS} holds {t:?} twice (ids {j} and {i}), expected each once"
            )));
        }
    }
    Ok(tokens)
}

/// Each token's type; without the key every token is normal, as in llama.cpp.
fn types(g: &Gguf, n: usize, what: &str) -> Result<Vec<i32>> {
    match g.get(TYPES) {
        None => Ok(vec![1; n]),
        Some(Value::I32s(v)) if v.len() >= n => Ok(v[..n].to_vec()),
        Some(Value::I32s(v)) => {
            Err(Error::input(format!("{what}: {TYPES} has {} entries for the {n} tokens of {TOKENS}", v.len())))
        }
        Some(v) => Err(wrong_type(what, TYPES, v, "an array of i32")),
    }
}

/// The merges as pairs, split as llama.cpp splits them (at the first space after the first
/// byte); each side and their concatenation must be tokens. A repeated merge keeps its first
/// rank, as llama.cpp keeps it.
fn merges(g: &Gguf, vocab: &HashMap<&str, u32>, what: &str) -> Result<Vec<[String; 2]>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, m) in strs(g, MERGES, what)?.iter().enumerate() {
        let bad = |why: &str| Error::input(format!("{what}: {MERGES}[{i}] = {m:?}: {why}"));
        let at = m.as_bytes().iter().skip(1).position(|&b| b == b' ').map(|p| p + 1);
        let (a, b) = match at {
            Some(p) if p + 1 < m.len() => (&m[..p], &m[p + 1..]),
            _ => return Err(bad("expected two tokens separated by a space, \"a b\"")),
        };
        let ab = format!("{a}{b}");
        for t in [a, b, ab.as_str()] {
            if !vocab.contains_key(t) {
                return Err(bad(&format!("{t:?} is not a token of {TOKENS}")));
            }
        }
        if seen.insert((a, b)) {
            out.push([a.to_string(), b.to_string()]);
        }
    }
    Ok(out)
}

/// An id a key names, checked against the `n` tokens.
fn token_id(g: &Gguf, key: &str, n: usize, what: &str) -> Result<Option<u32>> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::U32(id)) if (*id as usize) < n => Ok(Some(*id)),
        Some(Value::U32(id)) => {
            Err(Error::input(format!("{what}: {key} is {id}, but {TOKENS} has {n} tokens (expected an id below {n})")))
        }
        Some(v) => Err(wrong_type(what, key, v, "a u32 token id")),
    }
}

fn flag(g: &Gguf, key: &str, what: &str) -> Result<Option<bool>> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong_type(what, key, v, "a bool")),
    }
}

/// The special ids llama.cpp reads from the file, and whether it adds them to a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`, else llama.cpp's default for the pre-tokenizer (Llama 3:
    /// true).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`, else false.
    pub add_eos: bool,
}

/// The file's BOS/EOS ids; an id beyond the vocabulary, or one to add that the file lacks, is
/// refused naming the key.
pub fn special_ids(g: &Gguf, what: &str) -> Result<SpecialIds> {
    check_model(g, what)?;
    let pre = pre_of(g, what)?;
    let n = strs(g, TOKENS, what)?.len();
    let (bos, eos) = (token_id(g, BOS, n, what)?, token_id(g, EOS, n, what)?);
    let add_bos = flag(g, ADD_BOS, what)?.unwrap_or(pre.add_bos);
    let add_eos = flag(g, ADD_EOS, what)?.unwrap_or(false);
    for (add, id, key, add_key) in [(add_bos, bos, BOS, ADD_BOS), (add_eos, eos, EOS, ADD_EOS)] {
        if add && id.is_none() {
            return Err(Error::input(format!(
                "{what}: llama.cpp adds this token to every text ({add_key}, or the default for {PRE} = {:?}), but \
                 the file has no {key}",
                pre.name
            )));
        }
    }
    Ok(SpecialIds { bos, eos, add_bos, add_eos })
}

fn check_model(g: &Gguf, what: &str) -> Result<()> {
    match g.get(MODEL) {
        Some(Value::Str(m)) if m == "gpt2" => Ok(()),
        Some(Value::Str(m)) => Err(Error::input(format!(
            "{what}: {MODEL} is {m:?}: only byte-level BPE (\"gpt2\") is rebuilt as a tokenizer.json"
        ))),
        Some(v) => Err(wrong_type(what, MODEL, v, "the string \"gpt2\"")),
        None => Err(Error::input(format!("{what}: no {MODEL} (expected \"gpt2\", byte-level BPE)"))),
    }
}

/// `tokenizer.chat_template`, the Jinja template llama.cpp formats chats with.
pub fn chat_template(g: &Gguf) -> Option<String> {
    match g.get(CHAT_TEMPLATE) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A `TemplateProcessing` that adds BOS before and EOS after a text (and each of a pair), as
/// llama.cpp does with `add_special`; `None` when it adds neither.
fn template(ids: &SpecialIds, tokens: &[String]) -> Option<Json> {
    let bos = ids.bos.filter(|_| ids.add_bos);
    let eos = ids.eos.filter(|_| ids.add_eos);
    if bos.is_none() && eos.is_none() {
        return None;
    }
    let special = |id: u32, type_id: u32| json!({"SpecialToken": {"id": tokens[id as usize], "type_id": type_id}});
    let one = |seq: &str, type_id: u32| {
        let mut v: Vec<Json> = bos.map(|b| special(b, type_id)).into_iter().collect();
        v.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        v.extend(eos.map(|e| special(e, type_id)));
        v
    };
    let pair: Vec<Json> = one("A", 0).into_iter().chain(one("B", 1)).collect();
    let specials: serde_json::Map<String, Json> = bos
        .into_iter()
        .chain(eos)
        .map(|id| {
            let t = &tokens[id as usize];
            (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}))
        })
        .collect();
    Some(json!({"type": "TemplateProcessing", "single": one("A", 0), "pair": pair, "special_tokens": specials}))
}

/// The tokenizer.json (see the module's documentation); `what` (the file's path) goes into
/// every error.
pub fn tokenizer_json(g: &Gguf, what: &str) -> Result<String> {
    let ids = special_ids(g, what)?;
    let pre = pre_of(g, what)?;
    let tokens = tokens(g, what)?;
    let types = types(g, tokens.len(), what)?;
    let index: HashMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
    let merges = merges(g, &index, what)?;
    let vocab: serde_json::Map<String, Json> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<Json> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, ty))| matches!(**ty, UNKNOWN | CONTROL | USER_DEFINED))
        .map(|(i, (t, ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *ty != USER_DEFINED})
        })
        .collect();
    // Offsets as Llama 3's and SmolLM2's tokenizer.json give them; the ids are the template's.
    let offsets = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let post = match template(&ids, &tokens) {
        Some(t) => json!({"type": "Sequence", "processors": [offsets, t]}),
        None => offsets,
    };
    let j = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre.json,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": pre.ignore_merges, "vocab": vocab, "merges": merges,
        },
    });
    Ok(serde_json::to_string_pretty(&j).expect("JSON values serialize"))
}

/// A GGUF file's metadata, its tensors left unread (any tensor type will do): the file is
/// mapped copy-on-write and the tensor count in the header zeroed in that private copy.
pub fn read_metadata(path: &Path) -> Result<Gguf> {
    let what = path.display().to_string();
    let f = crate::error::open_regular(path)?;
    // Safety: the mapping is private and only read (bar the one header field we write into our
    // own copy of its page); a concurrent writer is the user's error, as for any reader.
    let mut map = unsafe { memmap2::MmapOptions::new().map_copy(&f) }
        .map_err(|e| Error::input(format!("{what}: cannot map: {e} (expected a .gguf file)")))?;
    // "GGUF", u32 version, then the u64 tensor count.
    if let Some(n_tensors) = map.get_mut(8..16) {
        n_tensors.fill(0);
    }
    Gguf::parse(&map, &what)
}

/// `distill tokenizer`: `gguf`'s tokenizer as a tokenizer.json at `out`, written atomically;
/// returns a line saying what was written.
pub fn write(gguf: &Path, out: &Path) -> Result<String> {
    let what = gguf.display().to_string();
    let g = read_metadata(gguf)?;
    let json = tokenizer_json(&g, &what)?;
    crate::util::write_atomic(out, json.as_bytes())?;
    let ids = special_ids(&g, &what)?;
    let n = strs(&g, TOKENS, &what)?.len();
    let pre = pre_of(&g, &what)?.name;
    let id = |id: Option<u32>, added: bool| match id {
        Some(i) => format!("{i}{}", if added { " (added to every text)" } else { "" }),
        None => "none".into(),
    };
    Ok(format!(
        "{}: {n} tokens, pre-tokenizer {pre:?}, BOS {}, EOS {}",
        out.display(),
        id(ids.bos, ids.add_bos),
        id(ids.eos, ids.add_eos)
    ))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use burn::tensor::Device;

    use super::*;
    use crate::export::gguf_model::{GgufQuant, Vocab, to_gguf};
    use crate::model::{DecoderConfig, ModelShape};

    fn fixture(name: &str) -> Json {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name);
        crate::util::read_json(&dir.join("tokenizer.json")).unwrap()
    }

    fn hf(json: &str) -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_str(json).unwrap()
    }

    fn ids(t: &tokenizers::Tokenizer, text: &str, special: bool) -> Vec<u32> {
        t.encode(text, special).unwrap().get_ids().to_vec()
    }

    /// Tokens that tell the exporter's three splits apart, in place of the fixture's last five,
    /// each with its merge (as scripts/gguf_tokenizer_check.py's `extend`): GPT-2 keeps a run of
    /// digits whole, Llama 3 cuts it by threes, Qwen2 digit by digit; only the latter two take
    /// `'S` as a contraction.
    const EXTRA: [(&str, &str); 5] = [("1", "2"), ("12", "3"), ("4", "5"), ("45", "6"), ("'", "S")];

    /// The fixture's tokenizer.json with `pre` as the family's own tokenizer.json spells it.
    fn variant(mut j: Json, pre: &str) -> Json {
        let vocab = j["model"]["vocab"].as_object_mut().unwrap();
        let mut by_id: Vec<(String, u64)> = vocab.iter().map(|(t, i)| (t.clone(), i.as_u64().unwrap())).collect();
        by_id.sort_by_key(|(_, i)| *i);
        let last = by_id.split_off(by_id.len() - EXTRA.len());
        for ((a, b), (gone, id)) in EXTRA.iter().zip(&last) {
            vocab.remove(gone);
            assert!(vocab.contains_key(*a) && vocab.contains_key(*b), "{a} {b}");
            vocab.insert(format!("{a}{b}"), (*id).into());
        }
        let gone: HashSet<&str> = last.iter().map(|(t, _)| t.as_str()).collect();
        let merges = j["model"]["merges"].as_array_mut().unwrap();
        merges.retain(|m| {
            let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
            !gone.contains(a) && !gone.contains(b) && !gone.contains(format!("{a}{b}").as_str())
        });
        merges.extend(EXTRA.iter().map(|(a, b)| json!([a, b])));
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
        let split =
            |p: &str| json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false});
        match pre {
            "llama-bpe" => {
                j["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level]});
                j["model"]["ignore_merges"] = true.into();
            }
            "qwen2" => {
                j["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level]});
                j["normalizer"] = json!({"type": "NFC"});
            }
            _ => assert_eq!(pre, "gpt-2"),
        }
        j
    }

    /// What our GGUF export writes for a tokenizer.json: its tokenizer keys (through the file's
    /// bytes), with EOS id 0 as in every fixture.
    fn exported(j: &Json, bos: Option<u32>) -> Gguf {
        let added = j["added_tokens"].as_array().unwrap().iter().map(|t| &t["id"]);
        let top = j["model"]["vocab"].as_object().unwrap().values().chain(added).map(|i| i.as_u64().unwrap()).max();
        let n = top.unwrap() as usize + 1;
        let vocab = Vocab::from_tokenizer_json(j, n, 0, bos, "t").unwrap();
        let config = DecoderConfig { vocab_size: n, shape: ModelShape::for_tests(32, 1, 2, 1, 32) };
        let g = to_gguf(&config.init(1, &Device::flex()), GgufQuant::F16, false, false, vocab).unwrap();
        Gguf::parse(&g.to_bytes(), "t").unwrap()
    }

    // Digits in runs, contractions in both cases, whitespace runs, non-ASCII (in NFC, which
    // Qwen2's tokenizer.json normalizes to and llama.cpp does not), special tokens in the text.
    const TEXTS: [&str; 9] = [
        "Once upon a time, there was a little dog.",
        "I'm sure you'll see: they've gone, WE'LL STAY, IT'S HERE, she'd say.",
        "In 2024 there were 1234567 stars and 3.14159 pies; call 555-0100! 456 12 123456 45",
        "  two leading spaces and    four inside\t\ttabs\n\n\nnew lines\r\nend   ",
        "Ünïcödé çàfé naïve résumé — 日本語のテキスト 🙂👍",
        "a<|endoftext|>b <|endoftext|> <s>c</s><s>",
        "don't DON'T Don'T o'clock",
        "",
        "\n leading newline",
    ];

    /// A tokenizer.json our exporter writes to GGUF (each of the three pre-tokenizers it names,
    /// with and without BOS) comes back from the GGUF giving the original's ids on every text,
    /// with and without special tokens added; and the three give different ids somewhere, so a
    /// split read back as another would fail.
    #[test]
    fn exported_tokenizers_come_back_with_the_same_ids() {
        for name in ["llama-gqa", "llama-bos"] {
            let mut by_pre = Vec::new();
            for pre in ["gpt-2", "llama-bpe", "qwen2"] {
                let j = variant(fixture(name), pre);
                let original = hf(&j.to_string());
                let (with, without) = (ids(&original, "a", true), ids(&original, "a", false));
                let bos = (with.len() > without.len()).then(|| with[0]);
                assert_eq!(bos.is_some(), name == "llama-bos");
                let g = exported(&j, bos);
                assert_eq!(g.get(PRE), Some(&Value::Str(pre.into())));
                let back = hf(&tokenizer_json(&g, "t").unwrap());
                let mut all = Vec::new();
                for text in TEXTS {
                    for special in [false, true] {
                        let got = ids(&back, text, special);
                        assert_eq!(got, ids(&original, text, special), "{name} {pre} {text:?} special {special}");
                        all.push(got);
                    }
                    if !text.contains('<') {
                        let got = ids(&back, text, false);
                        assert_eq!(back.decode(&got, false).unwrap(), text, "{name} {pre}");
                    }
                }
                // Without a BOS the exporter points BOS at EOS, not added.
                let want = SpecialIds { bos: bos.or(Some(0)), eos: Some(0), add_bos: bos.is_some(), add_eos: false };
                assert_eq!(special_ids(&g, "t").unwrap(), want);
                by_pre.push(all);
            }
            for (a, b) in [(0, 1), (0, 2), (1, 2)] {
                assert_ne!(by_pre[a], by_pre[b], "{name}: pre-tokenizers {a} and {b} agree on every text");
            }
        }
    }

    /// A hand-made vocabulary: a control token, letters, digits and a few merges of each.
    fn tiny(pre: &str) -> Gguf {
        let tokens = ["<|endoftext|>", "a", "b", "1", "2", "3", "Ġ", "ab", "12", "123", "Ġa", ".", "Ġ."];
        let merges = ["a b", "1 2", "12 3", "Ġ a", "Ġ ."];
        let strings = |s: &[&str]| Value::Strs(s.iter().map(|t| t.to_string()).collect());
        let mut types = vec![1; tokens.len()];
        types[0] = CONTROL;
        Gguf {
            kv: vec![
                (MODEL.into(), Value::Str("gpt2".into())),
                (PRE.into(), Value::Str(pre.into())),
                (TOKENS.into(), strings(&tokens)),
                (TYPES.into(), Value::I32s(types)),
                (MERGES.into(), strings(&merges)),
                (BOS.into(), Value::U32(0)),
                (EOS.into(), Value::U32(0)),
            ],
            tensors: vec![],
        }
    }

    fn set(g: &mut Gguf, key: &str, v: Value) {
        g.kv.retain(|(k, _)| k != key);
        g.kv.push((key.into(), v));
    }

    /// llama.cpp's splits on a vocabulary small enough to work them out by hand: `smollm` cuts
    /// every digit off before GPT-2's regex; `default` cuts punctuation runs off, then GPT-2's
    /// regex, then digit runs, then three-digit groups.
    #[test]
    fn splits_cut_as_llama_cpp_cuts() {
        // "ab", " 123", " a", "12" under GPT-2's regex.
        let cases: [(&str, [&[u32]; 3]); 4] = [
            ("ab 123 a12", [&[7, 6, 9, 10, 8], &[7, 6, 3, 4, 5, 10, 3, 4], &[7, 6, 9, 10, 8]]),
            // default: "112" then "3".
            ("1123", [&[3, 9], &[3, 3, 4, 5], &[3, 8, 5]]),
            // default: "." apart from the space before it.
            ("a .", [&[1, 12], &[1, 12], &[1, 6, 11]]),
            ("ab<|endoftext|>12", [&[7, 0, 8], &[7, 0, 3, 4], &[7, 0, 8]]),
        ];
        for (i, pre) in ["gpt-2", "smollm", "default"].into_iter().enumerate() {
            let t = hf(&tokenizer_json(&tiny(pre), "t").unwrap());
            for (text, want) in cases {
                assert_eq!(ids(&t, text, true), want[i], "{pre} {text:?}");
            }
        }
        // A file without the key is llama.cpp's default.
        let mut g = tiny("default");
        g.kv.retain(|(k, _)| k != PRE);
        assert_eq!(tokenizer_json(&g, "t").unwrap(), tokenizer_json(&tiny("default"), "t").unwrap());
    }

    /// BOS as llama.cpp adds it: the file's flag, else the pre-tokenizer's default (Llama 3
    /// adds it); EOS when the file says so.
    #[test]
    fn bos_and_eos_are_added_as_llama_cpp_adds_them() {
        let encode = |g: &Gguf| ids(&hf(&tokenizer_json(g, "t").unwrap()), "ab", true);
        assert_eq!(encode(&tiny("gpt-2")), [7]);
        let mut g = tiny("llama-bpe");
        assert_eq!(encode(&g), [0, 7]);
        set(&mut g, ADD_BOS, Value::Bool(false));
        set(&mut g, ADD_EOS, Value::Bool(true));
        set(&mut g, EOS, Value::U32(11));
        assert_eq!(encode(&g), [7, 11]);
        assert_eq!(
            special_ids(&g, "t").unwrap(),
            SpecialIds { bos: Some(0), eos: Some(11), add_bos: false, add_eos: true }
        );
    }

    /// Files llama.cpp would tokenize otherwise, or not at all, are refused naming the file,
    /// the key and what was expected.
    #[test]
    fn files_without_a_rebuildable_tokenizer_are_refused() {
        let refused = |g: Gguf, want: &[&str]| {
            let e = tokenizer_json(&g, "f.gguf").unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with("f.gguf: ") && e.exit_code() == 2, "{s}");
            assert!(want.iter().all(|w| s.contains(w)), "{s} lacks {want:?}");
        };
        let with = |key: &str, v: Value| {
            let mut g = tiny("smollm");
            set(&mut g, key, v);
            g
        };
        refused(with(MODEL, Value::Str("llama".into())), &["tokenizer.ggml.model is \"llama\"", "\"gpt2\""]);
        refused(
            with(PRE, Value::Str("tekken".into())),
            &["tokenizer.ggml.pre is \"tekken\"", "\"smollm\", \"default\""],
        );
        refused(with(BOS, Value::U32(13)), &["tokenizer.ggml.bos_token_id is 13", "has 13 tokens"]);
        refused(with(EOS, Value::I32(2)), &["tokenizer.ggml.eos_token_id is I32(2)", "u32"]);
        let merges = |m: &[&str]| Value::Strs(m.iter().map(|s| s.to_string()).collect());
        refused(with(MERGES, merges(&["a b", "ab"])), &["tokenizer.ggml.merges[1] = \"ab\"", "\"a b\""]);
        refused(with(MERGES, merges(&["a "])), &["tokenizer.ggml.merges[0]", "\"a b\""]);
        refused(with(MERGES, merges(&["b a"])), &["\"ba\" is not a token"]);
        refused(with(TOKENS, Value::Str("a".into())), &["tokenizer.ggml.tokens is Str(\"a\")", "array of strings"]);
        refused(with(TYPES, Value::I32s(vec![1; 3])), &["tokenizer.ggml.token_type has 3 entries for the 13"]);
        let mut twice = tiny("smollm");
        let Some((_, Value::Strs(t))) = twice.kv.iter_mut().find(|(k, _)| k == TOKENS) else { unreachable!() };
        t[12] = "ab".into();
        refused(twice, &["holds \"ab\" twice (ids 7 and 12)"]);
        let mut no_bos = with(ADD_BOS, Value::Bool(true));
        no_bos.kv.retain(|(k, _)| k != BOS);
        refused(no_bos, &["no tokenizer.ggml.bos_token_id"]);
    }

    /// `distill tokenizer`: the metadata of a file whose tensors we could not read, written as a
    /// tokenizer.json our tokenizer loads; the chat template as the file has it.
    #[test]
    fn writes_the_tokenizer_of_any_file() {
        let mut g = tiny("smollm");
        assert_eq!(chat_template(&g), None);
        set(&mut g, CHAT_TEMPLATE, Value::Str("{{ messages }}".into()));
        assert_eq!(chat_template(&g).as_deref(), Some("{{ messages }}"));
        // Five tensors claimed, garbage where their descriptions should be.
        let mut bytes = g.to_bytes();
        bytes[8..16].copy_from_slice(&5u64.to_le_bytes());
        bytes.extend([0xff; 40]);
        assert!(Gguf::parse(&bytes, "f").is_err());
        let dir = std::env::temp_dir().join(format!("distill-gguf-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, out) = (dir.join("m.gguf"), dir.join("tokenizer.json"));
        std::fs::write(&file, &bytes).unwrap();
        let line = write(&file, &out).unwrap();
        assert!(line.contains("13 tokens") && line.contains("\"smollm\""), "{line}");
        let tok = crate::data::tokenizer::Tokenizer::load(&out).unwrap();
        assert_eq!((tok.encode("ab 12").unwrap(), tok.eos_id, tok.bos_id), (vec![7, 6, 3, 4], 0, None));
        let e = write(&dir.join("missing.gguf"), &out).unwrap_err();
        assert!(e.to_string().contains("missing.gguf") && e.exit_code() == 2, "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
