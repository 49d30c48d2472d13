//! The student as a GGUF file llama.cpp runs: its architecture metadata, its byte-level BPE
//! tokenizer, and its weights in F16, Q8_0 or Q4_0, named and laid out as llama.cpp's
//! `convert_hf_to_gguf.py` writes them.
//!
//! - Architecture: `llama` (no biases, or q/k/v/o biases) or `qwen2` (q/k/v biases). Sliding
//!   windows and Mamba-2 layers have no exact llama.cpp counterpart here, nor Llama-3 RoPE
//!   scaling in `qwen2`: refused, naming why, before anything is written. In `llama` that
//!   scaling is the converter's `rope_freqs.weight` ([`rope_freqs`]).
//! - RoPE: llama.cpp's `llama` rotates adjacent pairs `(2i, 2i + 1)` where our q/k (as Hugging
//!   Face's) rotate halves `(i, i + d/2)`, so each head's q/k rows (and biases) are permuted
//!   ([`permute_rows`]), as the converter does. `qwen2` rotates halves in llama.cpp too: no
//!   permutation. A row permutation moves whole quantization blocks, so it changes no value.
//! - Quantization: every block linear in the chosen type; the embedding table and a separate
//!   LM head each in the same type when asked (`[qat] embeddings` / `lm_head`, so that what QAT
//!   trained against is what is written), else F32 (F16 for `gguf-f16`); norms and biases F32.
//!   A tied table is quantized when either is asked: it is both.
//!   The Q8_0/Q4_0 blocks are [`crate::quant::ggml`]'s, byte for byte ggml's.

use std::path::{Path, PathBuf};

use half::f16;

use super::gguf::{GgmlType, Gguf, GgufTensor, Value};
use crate::error::{Error, Result};
use crate::model::{Decoder, ModelShape};
use crate::quant::ggml::{self, QK};
use crate::quant::int8::linear_out_in;

/// The weight type of a GGUF export's block linears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F16,
    Q8_0,
    Q4_0,
}

impl GgufQuant {
    pub fn name(self) -> &'static str {
        match self {
            GgufQuant::F16 => "f16",
            GgufQuant::Q8_0 => "q8_0",
            GgufQuant::Q4_0 => "q4_0",
        }
    }

    fn ggml(self) -> GgmlType {
        match self {
            GgufQuant::F16 => GgmlType::F16,
            GgufQuant::Q8_0 => GgmlType::Q8_0,
            GgufQuant::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`).
    fn file_type(self) -> u32 {
        match self {
            GgufQuant::F16 => 1,
            GgufQuant::Q8_0 => 7,
            GgufQuant::Q4_0 => 2,
        }
    }
}

/// The llama.cpp architecture that computes exactly a model of this shape, or why none does
/// (also checked on the recipe, before any training, when it asks for a GGUF export).
pub fn architecture(s: &ModelShape) -> Result<&'static str> {
    let refuse = |why: &str| Err(Error::input(format!("cannot export this model as GGUF: {why}")));
    if s.layer_pattern.contains('M') {
        return refuse(&format!(
            "its layer pattern {:?} has Mamba-2 layers, which llama.cpp has no architecture for in this \
             combination (use the int8, int4 or f32 export)",
            s.layer_pattern
        ));
    }
    if let Some(why) = s.export_gap().or_else(|| s.gguf_moe_gap()) {
        return refuse(&why);
    }
    if let Some(w) = s.window {
        return refuse(&format!(
            "it attends through a sliding window of {w} tokens, which llama.cpp's llama and qwen2 ignore"
        ));
    }
    match (s.qkv_bias, s.o_bias) {
        (false, false) | (true, true) => Ok("llama"),
        (true, false) if s.rope_scaling.is_some() => refuse(
            "it has q/k/v biases without an o_proj bias (llama.cpp's qwen2) and Llama-3 RoPE scaling, whose \
             rope_freqs tensor llama.cpp reads only for llama",
        ),
        (true, false) => Ok("qwen2"),
        (false, true) => refuse("an o_proj bias without q/k/v biases exists in no llama.cpp architecture"),
    }
}

/// Llama-3 RoPE scaling as llama.cpp takes it: `rope_freqs.weight`, one divisor per rotation
/// frequency (the plain frequency over the scaled one, as the converter's `rope_factors`).
/// Our own parameters ride along as `distill.rope_scaling.*` keys (llama.cpp ignores them) so
/// that reading the file back gives the same shape.
pub fn rope_freqs(s: &ModelShape, head_dim: usize) -> Option<(Vec<f32>, [MetaKey; 4])> {
    let r = s.rope_scaling.as_ref()?;
    let plain = crate::model::rope::inv_freqs(head_dim, s.rope_theta, None);
    let scaled = crate::model::rope::inv_freqs(head_dim, s.rope_theta, Some(r));
    let factors = plain.iter().zip(&scaled).map(|(p, q)| (p / q) as f32).collect();
    let key = |k: &str| format!("{ROPE_SCALING_KEY}.{k}");
    Some((
        factors,
        [
            (key("factor"), Value::F32(r.factor as f32)),
            (key("low_freq_factor"), Value::F32(r.low_freq_factor as f32)),
            (key("high_freq_factor"), Value::F32(r.high_freq_factor as f32)),
            (key("original_max_position_embeddings"), Value::U32(r.original_max_position_embeddings as u32)),
        ],
    ))
}

/// One metadata key and its value.
pub type MetaKey = (String, Value);

/// Where [`rope_freqs`] keeps the scaling's parameters.
pub const ROPE_SCALING_KEY: &str = "distill.rope_scaling";

/// The tensor [`rope_freqs`]'s factors go in (llama.cpp's name).
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// Our tensor names (Hugging Face's) and llama.cpp's: the model-level ones, then a block's
/// (`model.layers.N.<ours>` is `blk.N.<theirs>`, `.weight` or `.bias` after either). The
/// writer and the reader both go by this table.
pub const TOP_NAMES: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];
pub const LAYER_NAMES: [(&str, &str); 9] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// llama.cpp's name of one of our tensors in `table`.
fn gguf_name(table: &[(&str, &'static str)], ours: &str) -> &'static str {
    table.iter().find(|(o, _)| *o == ours).map(|(_, g)| *g).unwrap_or_else(|| unreachable!("no tensor {ours}"))
}

/// Row `r` of the pair-interleaved layout comes from this row of the rotate-half one: within
/// a head of `hd` rows, row `2i + j` is row `j hd/2 + i` (the converter's `reshape(n_head, 2,
/// hd/2, ..).swapaxes(1, 2)`).
pub fn source_row(r: usize, hd: usize) -> usize {
    let (head, k) = (r / hd, r % hd);
    head * hd + (k % 2) * (hd / 2) + k / 2
}

/// Each head's rows in pair-interleaved order (see [`source_row`]).
pub fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    (0..rows).flat_map(|r| &w[source_row(r, hd) * cols..][..cols]).copied().collect()
}

/// `[rows, cols]` f32 values (output channels as rows) in `ty`'s bytes; `name` for errors.
fn encode(w: &[f32], cols: usize, ty: GgmlType, name: &str) -> Result<Vec<u8>> {
    crate::quant::check_finite(w, cols, name)?;
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) && !cols.is_multiple_of(QK) {
        return Err(Error::input(format!(
            "{name}: {ty:?} quantizes blocks of {QK} values along each row, but rows have {cols} values"
        )));
    }
    let blocks = |f: &dyn Fn(&[f32; QK]) -> Vec<u8>| -> Vec<u8> {
        w.chunks_exact(QK).flat_map(|b| f(b.try_into().expect("whole blocks"))).collect()
    };
    Ok(match ty {
        GgmlType::F32 => crate::util::f32s_to_le(w),
        GgmlType::F16 => w.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        GgmlType::Q8_0 => blocks(&|b| ggml::quantize_q8_0(b).to_bytes().to_vec()),
        GgmlType::Q4_0 => blocks(&|b| ggml::quantize_q4_0(b).to_bytes().to_vec()),
        other => return Err(Error::runtime(format!("{name}: we read {other:?} tensors but do not write them"))),
    })
}

fn tensor(name: &str, w: &[f32], shape: &[usize], ty: GgmlType) -> Result<GgufTensor> {
    let cols = *shape.last().expect("a shape");
    let ty = if shape.len() == 1 { GgmlType::F32 } else { ty };
    let data = encode(w, cols, ty, name)?;
    Ok(GgufTensor { name: name.into(), ne: shape.iter().rev().map(|&d| d as u64).collect(), ty, data })
}

fn values(t: burn::tensor::Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

/// The tokenizer as GGUF metadata: byte-level BPE (`gpt2`) with one of the pre-tokenizers
/// llama.cpp implements ([`pre_tokenizer`]).
#[derive(Debug, Clone)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub eos: u32,
    pub bos: Option<u32>,
    /// llama.cpp's name of the pre-tokenizer (`tokenizer.ggml.pre`).
    pub pre: &'static str,
}

/// The split regex of Llama 3's tokenizer.json (llama.cpp's `llama-bpe`).
pub const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The split regex of Qwen2's tokenizer.json (llama.cpp's `qwen2`): Llama 3's, but digits one
/// at a time.
pub const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Whether a tokenizer.json can be written to GGUF (BPE, and a split llama.cpp implements):
/// llama.cpp's pre-tokenizer name, or why not. Checked before a run starts
/// (`pipeline::preflight`) and when the file is written.
pub fn gguf_tokenizer(j: &serde_json::Value) -> std::result::Result<&'static str, String> {
    match j["model"]["type"].as_str() {
        Some("BPE") => pre_tokenizer(j),
        _ => Err(format!("model type {}, expected BPE", j["model"]["type"])),
    }
}

/// llama.cpp's name for a byte-level BPE tokenizer.json's pre-tokenizer, when it implements the
/// same split: GPT-2's (`ByteLevel` with its own regex, no normalizer), Llama 3's (`Split` on
/// [`LLAMA3_SPLIT`], then `ByteLevel` without a regex; `ignore_merges`, as llama.cpp does for
/// it) and Qwen2's ([`QWEN2_SPLIT`]; its NFC normalizer is dropped, as llama.cpp's converter
/// drops it: text already in NFC tokenizes the same). llama.cpp's converter recognizes these by
/// hashing a test string's tokens; we compare the definitions themselves.
fn pre_tokenizer(j: &serde_json::Value) -> std::result::Result<&'static str, String> {
    let (pre, norm, ignore) = (&j["pre_tokenizer"], &j["normalizer"], j["model"]["ignore_merges"] == true);
    let byte_level = |p: &serde_json::Value, regex: bool| {
        p["type"] == "ByteLevel" && (p["use_regex"] != false) == regex && p["add_prefix_space"] != true
    };
    fn split(p: &serde_json::Value) -> Option<&str> {
        let isolated = p["type"] == "Split" && p["behavior"] == "Isolated" && p["invert"] != true;
        p["pattern"]["Regex"].as_str().filter(|_| isolated)
    }
    let steps = pre["pretokenizers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let name = match (pre["type"].as_str(), steps) {
        (Some("ByteLevel"), _) if byte_level(pre, true) && norm.is_null() && !ignore => Some("gpt-2"),
        // SmolLM's: every digit alone, then GPT-2's split (llama.cpp's `smollm`).
        (Some("Sequence"), [d, b])
            if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b, true) && norm.is_null() =>
        {
            (!ignore).then_some("smollm")
        }
        (Some("Sequence"), [s, b]) if byte_level(b, false) => match split(s) {
            Some(LLAMA3_SPLIT) if norm.is_null() && ignore => Some("llama-bpe"),
            Some(QWEN2_SPLIT) if (norm.is_null() || norm["type"] == "NFC") && !ignore => Some("qwen2"),
            _ => None,
        },
        _ => None,
    };
    name.ok_or_else(|| {
        format!(
            "pre-tokenizer {pre} with normalizer {norm} and ignore_merges {ignore}: llama.cpp's splits written are \
             GPT-2's (`gpt-2`), Llama 3's (`llama-bpe`), Qwen2's (`qwen2`) and SmolLM's (`smollm`), each as its \
             tokenizer.json defines it"
        )
    })
}

// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

impl Vocab {
    /// From a `tokenizer.json` (`what` names it in errors) for a model of `n_vocab` rows: ids
    /// the tokenizer does not use become `[PAD<id>]` (unused), as the converter writes them.
    pub fn from_tokenizer_json(
        j: &serde_json::Value,
        n_vocab: usize,
        eos: u32,
        bos: Option<u32>,
        what: &str,
    ) -> Result<Vocab> {
        let bad = |msg: String| Error::input(format!("{what}: cannot write this tokenizer to GGUF: {msg}"));
        let model = &j["model"];
        let pre = gguf_tokenizer(j).map_err(bad)?;
        let mut tokens: Vec<Option<(String, i32)>> = vec![None; n_vocab];
        let mut put = |id: u64, tok: &str, ty: i32| -> Result<()> {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| {
                bad(format!("token {tok:?} has id {id}, but the model has only {n_vocab} embedding rows"))
            })?;
            *slot = Some((tok.to_string(), ty));
            Ok(())
        };
        let vocab = model["vocab"].as_object().ok_or_else(|| bad("no model.vocab object".into()))?;
        for (tok, id) in vocab {
            put(id.as_u64().ok_or_else(|| bad(format!("token {tok:?}: id {id} is not a number")))?, tok, NORMAL)?;
        }
        for t in j["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(tok)) = (t["id"].as_u64(), t["content"].as_str()) else {
                return Err(bad(format!("added token {t} has no id or content")));
            };
            put(id, tok, if t["special"] == true { CONTROL } else { USER_DEFINED })?;
        }
        let (tokens, types) =
            tokens.into_iter().enumerate().map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED))).unzip();
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| bad("no model.merges list".into()))?
            .iter()
            .map(|m| match (m.as_str(), m.as_array().map(|a| a.as_slice())) {
                (Some(s), _) => Ok(s.to_string()),
                (_, Some([a, b])) if a.is_string() && b.is_string() => {
                    Ok(format!("{} {}", a.as_str().unwrap(), b.as_str().unwrap()))
                }
                _ => Err(bad(format!("merge {m} is neither \"a b\" nor [\"a\", \"b\"]"))),
            })
            .collect::<Result<_>>()?;
        Ok(Vocab { tokens, types, merges, eos, bos, pre })
    }
}

/// The model and its tokenizer as GGUF.
pub fn to_gguf(model: &Decoder, quant: GgufQuant, embeddings: bool, lm_head: bool, vocab: Vocab) -> Result<Gguf> {
    let arch = architecture(&model.config.shape)?;
    let c = &model.config;
    let s = &c.shape;
    let hd = c.head_dim();
    let ty = quant.ggml();
    let table_ty = |asked: bool| match (quant, asked) {
        (_, true) | (GgufQuant::F16, _) => ty,
        _ => GgmlType::F32,
    };
    let tied = model.lm_head.is_none();
    let u = |x: usize| Value::U32(x as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(arch.into())),
        ("general.type".into(), Value::Str("model".into())),
        ("general.name".into(), Value::Str("distill student".into())),
        (key("block_count"), u(s.n_layers)),
        (key("context_length"), u(s.max_seq_len)),
        (key("embedding_length"), u(s.d_model)),
        (key("feed_forward_length"), u(s.moe.as_ref().map_or(s.d_ff, |m| m.d_ff_expert))),
        (key("attention.head_count"), u(s.n_heads)),
        (key("attention.head_count_kv"), u(s.n_kv_heads)),
        (key("rope.freq_base"), Value::F32(s.rope_theta as f32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(s.norm_eps as f32)),
        (key("attention.key_length"), u(hd)),
        (key("attention.value_length"), u(hd)),
        (key("vocab_size"), u(c.vocab_size)),
        (key("rope.dimension_count"), u(hd)),
        ("general.file_type".into(), Value::U32(quant.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str(vocab.pre.into())),
    ];
    if let Some(m) = &s.moe {
        kv.extend([(key("expert_count"), u(m.experts)), (key("expert_used_count"), u(m.active))]);
    }
    if vocab.tokens.len() != c.vocab_size {
        return Err(Error::input(format!(
            "the tokenizer has {} tokens for a model of {} embedding rows",
            vocab.tokens.len(),
            c.vocab_size
        )));
    }
    kv.extend([
        ("tokenizer.ggml.tokens".into(), Value::Strs(vocab.tokens)),
        ("tokenizer.ggml.token_type".into(), Value::I32s(vocab.types)),
        ("tokenizer.ggml.merges".into(), Value::Strs(vocab.merges)),
        // Without a BOS, point BOS at EOS (llama.cpp's gpt2 default, 11, is an ordinary token
        // of ours) and say it is not added.
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.bos.unwrap_or(vocab.eos))),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(vocab.bos.is_some())),
    ]);

    let mut tensors = Vec::new();
    // First, as the converter yields it before the checkpoint's tensors.
    if let Some((factors, keys)) = rope_freqs(s, hd) {
        tensors.push(tensor(ROPE_FREQS, &factors, &[hd / 2], GgmlType::F32)?);
        kv.extend(keys);
    }
    let e = model.embed.weight.val();
    let [v, d] = e.dims();
    let emb: Vec<f32> = e.into_data().convert::<f32>().iter::<f32>().collect();
    let emb_ty = table_ty(crate::quant::fake_quant::embedding_quantized(embeddings, lm_head, tied));
    let top = |ours: &str| gguf_name(&TOP_NAMES, ours);
    tensors.push(tensor(top("model.embed_tokens.weight"), &emb, &[v, d], emb_ty)?);
    let permute = arch == "llama";
    for (i, b) in model.blocks.iter().enumerate() {
        let p = format!("blk.{i}");
        let norm = |ours: &str| format!("{p}.{}.weight", gguf_name(&LAYER_NAMES, ours));
        tensors.push(tensor(&norm("input_layernorm"), &values(b.mixer_norm.gamma.val()), &[d], ty)?);
        let mut experts: [Vec<f32>; 3] = Default::default();
        for (name, l) in b.linears() {
            // A mixture's experts go into one [experts, rows, cols] tensor per projection, its
            // router stays f32 (llama.cpp's converter keeps ffn_gate_inp unquantized).
            if let Some(rest) = name.strip_prefix("mlp.experts.") {
                let which = ["gate_proj", "up_proj", "down_proj"]
                    .iter()
                    .position(|p| rest.ends_with(p))
                    .expect("an expert linear");
                experts[which].extend(linear_out_in(l).0);
                continue;
            }
            if name == "mlp.gate" {
                let (w, rows, cols) = linear_out_in(l);
                tensors.push(tensor(&format!("{p}.ffn_gate_inp.weight"), &w, &[rows, cols], GgmlType::F32)?);
                continue;
            }
            let short = gguf_name(&LAYER_NAMES, &name);
            let heads = match short {
                "attn_q" if permute => Some(s.n_heads),
                "attn_k" if permute => Some(s.n_kv_heads),
                _ => None,
            };
            let (mut w, rows, cols) = linear_out_in(l);
            if let Some(n) = heads {
                w = permute_rows(&w, rows, cols, n);
            }
            tensors.push(tensor(&format!("{p}.{short}.weight"), &w, &[rows, cols], ty)?);
            if let Some(bias) = &l.bias {
                let mut bv = values(bias.val());
                if let Some(n) = heads {
                    bv = permute_rows(&bv, rows, 1, n);
                }
                tensors.push(tensor(&format!("{p}.{short}.bias"), &bv, &[rows], ty)?);
            }
            if short == "attn_output" {
                tensors.push(tensor(&norm("post_attention_layernorm"), &values(b.mlp_norm.gamma.val()), &[d], ty)?);
            }
        }
        if let Some(m) = &b.moe {
            let (e, ff) = (m.experts.len(), m.experts[0].w_up.weight.dims()[1]);
            for (which, (w, short)) in experts.iter().zip(["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]).enumerate()
            {
                let (rows, cols) = if which == 2 { (d, ff) } else { (ff, d) };
                tensors.push(tensor(&format!("{p}.{short}.weight"), w, &[e, rows, cols], ty)?);
            }
        }
    }
    tensors.push(tensor(top("model.norm.weight"), &values(model.norm.gamma.val()), &[d], ty)?);
    if let Some(h) = &model.lm_head {
        let (w, rows, cols) = linear_out_in(h);
        tensors.push(tensor(top("lm_head.weight"), &w, &[rows, cols], table_ty(lm_head))?);
    }
    Ok(Gguf { kv, tensors })
}

/// Write `dir/model.<quant>.gguf` (atomically); returns its path and size in bytes.
pub fn export(
    model: &Decoder,
    quant: GgufQuant,
    plan: &crate::quant::fake_quant::Plan,
    dir: &Path,
    tokenizer_json: &Path,
) -> Result<(PathBuf, u64)> {
    // Refused before anything is read or written.
    architecture(&model.config.shape)?;
    let what = tokenizer_json.display().to_string();
    let tok = crate::data::tokenizer::Tokenizer::load(tokenizer_json)?;
    let j: serde_json::Value = crate::util::read_json(tokenizer_json)?;
    let vocab = Vocab::from_tokenizer_json(&j, model.config.vocab_size, tok.eos_id, tok.bos_id, &what)?;
    let bytes = to_gguf(model, quant, plan.embeddings, plan.lm_head, vocab)?.to_bytes();
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("model.{}.gguf", quant.name()));
    crate::util::write_atomic(&path, &bytes)?;
    Ok((path, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fake_quant::{Plan, Scheme};
    use burn::tensor::{DType, Device};
    use sha2::{Digest, Sha256};

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
    }

    fn gqa() -> Decoder {
        crate::teacher::hf::load(&fixture("hf/llama-gqa"), &Device::flex(), DType::F32).unwrap().0
    }

    fn vocab_of(model: &Decoder) -> Vocab {
        let path = fixture("hf/llama-gqa/tokenizer.json");
        let tok = crate::data::tokenizer::Tokenizer::load(&path).unwrap();
        let j: serde_json::Value = crate::util::read_json(&path).unwrap();
        Vocab::from_tokenizer_json(&j, model.config.vocab_size, tok.eos_id, tok.bos_id, "tokenizer.json").unwrap()
    }

    /// Our GGUF of the llama-gqa fixture is byte for byte what the `gguf` package writes from
    /// the same Hugging Face folder (`scripts/make_gguf_fixture.py`): metadata, tokenizer,
    /// permuted q/k rows, f16 conversion, ggml's blocks, the layout.
    #[test]
    fn files_are_byte_identical_to_the_gguf_packages() {
        let model = gqa();
        let cases: Vec<serde_json::Value> = crate::util::read_json(&fixture("gguf/llama-gqa.json")).unwrap();
        assert_eq!(cases.len(), 4);
        for c in cases {
            let quant = match c["format"].as_str().unwrap() {
                "f16" => GgufQuant::F16,
                "q8_0" => GgufQuant::Q8_0,
                _ => GgufQuant::Q4_0,
            };
            let (emb, head) = (c["embeddings"].as_bool().unwrap(), c["lm_head"].as_bool().unwrap());
            let bytes = to_gguf(&model, quant, emb, head, vocab_of(&model)).unwrap().to_bytes();
            assert_eq!(bytes.len() as u64, c["bytes"].as_u64().unwrap(), "{c}");
            let sha = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(sha, c["sha256"].as_str().unwrap(), "{c}");
        }
    }

    /// The pre-tokenizers llama.cpp implements are named as its converter names them, from
    /// tokenizer.json as each family writes it; a split llama.cpp would cut differently (another
    /// regex, a normalizer, merges used where llama.cpp ignores them) is refused, naming it.
    /// That llama.cpp then tokenizes as the tokenizer.json does: scripts/gguf_tokenizer_check.py.
    #[test]
    fn pre_tokenizers_are_named_as_llama_cpp_names_them() {
        let base: serde_json::Value = crate::util::read_json(&fixture("hf/llama-gqa/tokenizer.json")).unwrap();
        let with = |split: Option<&str>, normalizer: serde_json::Value, ignore: bool| {
            let mut j = base.clone();
            if let Some(p) = split {
                j["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
            }
            j["normalizer"] = normalizer;
            j["model"]["ignore_merges"] = ignore.into();
            pre_tokenizer(&j)
        };
        let null = serde_json::Value::Null;
        let nfc = serde_json::json!({"type": "NFC"});
        assert_eq!(with(None, null.clone(), false), Ok("gpt-2"));
        assert_eq!(with(Some(LLAMA3_SPLIT), null.clone(), true), Ok("llama-bpe"));
        assert_eq!(with(Some(QWEN2_SPLIT), nfc.clone(), false), Ok("qwen2"));
        assert_eq!(with(Some(QWEN2_SPLIT), null.clone(), false), Ok("qwen2"));
        for (split, norm, ignore) in [
            (None, nfc.clone(), false),
            (Some(LLAMA3_SPLIT), null.clone(), false),
            (Some(LLAMA3_SPLIT), nfc, true),
            (Some(QWEN2_SPLIT), null.clone(), true),
            (Some(r"\s+|\w+"), null.clone(), false),
        ] {
            let e = with(split, norm, ignore).unwrap_err();
            assert!(e.contains("`llama-bpe`") && e.contains("ignore_merges"), "{e}");
        }
        // Llama 3's regex differs from Qwen2's in the digits alone.
        assert_eq!(LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}"), QWEN2_SPLIT);
        // SmolLM2's tokenizer.json (as on the Hub): digits one by one, then GPT-2's ByteLevel.
        let mut smol = base.clone();
        smol["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(pre_tokenizer(&smol), Ok("smollm"));
        smol["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] = false.into();
        assert!(pre_tokenizer(&smol).is_err(), "digit runs are not llama.cpp's smollm");
    }

    /// Pair-interleaved RoPE (llama.cpp's `llama`) on the permuted rows is rotate-half RoPE
    /// (ours, Hugging Face's) on the original rows, permuted: the export changes no attention
    /// score.
    #[test]
    fn permuted_rows_under_interleaved_rope_are_rotate_half_rope() {
        let (n_head, hd, pos) = (3, 8, 5.0f32);
        let q: Vec<f32> = (0..n_head * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let angle = |i: usize| pos * 10000f32.powf(-2.0 * i as f32 / hd as f32);
        let mut half = q.clone();
        let mut pairs = permute_rows(&q, n_head * hd, 1, n_head);
        for h in 0..n_head {
            for i in 0..hd / 2 {
                let (c, s) = (angle(i).cos(), angle(i).sin());
                let (a, b) = (h * hd + i, h * hd + i + hd / 2);
                (half[a], half[b]) = (q[a] * c - q[b] * s, q[b] * c + q[a] * s);
                let (a, b) = (h * hd + 2 * i, h * hd + 2 * i + 1);
                let (x, y) = (pairs[a], pairs[b]);
                (pairs[a], pairs[b]) = (x * c - y * s, y * c + x * s);
            }
        }
        assert_eq!(permute_rows(&half, n_head * hd, 1, n_head), pairs);
        assert_ne!(permute_rows(&q, n_head * hd, 1, n_head), q);
    }

    const LINEARS: Plan = Plan::linears(Scheme::Q8_0);

    /// Models llama.cpp would compute differently are refused naming why; nothing is written.
    #[test]
    fn models_without_an_exact_llama_cpp_architecture_are_refused() {
        use crate::model::{DecoderConfig, ModelShape};
        let dir = std::env::temp_dir().join(format!("distill-gguf-refused-{}", std::process::id()));
        let tok = fixture("hf/llama-gqa/tokenizer.json");
        let mut c = DecoderConfig { vocab_size: 1024, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        c.shape.layer_pattern = "AM".into();
        let e = export(&c.init(1, &Device::flex()), GgufQuant::Q8_0, &LINEARS, &dir, &tok).unwrap_err();
        assert!(e.to_string().contains("Mamba-2") && e.exit_code() == 2, "{e}");
        let mut c = DecoderConfig { vocab_size: 1024, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        c.shape.window = Some(16);
        let e = export(&c.init(1, &Device::flex()), GgufQuant::Q8_0, &LINEARS, &dir, &tok).unwrap_err();
        assert!(e.to_string().contains("sliding window"), "{e}");
        assert!(!dir.exists(), "nothing written");
        // A vocabulary larger than the model.
        let small = DecoderConfig { vocab_size: 100, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        let e = export(&small.init(1, &Device::flex()), GgufQuant::Q8_0, &LINEARS, &dir, &tok).unwrap_err();
        assert!(e.to_string().contains("only 100 embedding rows"), "{e}");
        // Rows that do not tile ggml's blocks.
        let odd = DecoderConfig { vocab_size: 1024, shape: ModelShape::for_tests(48, 1, 4, 2, 96) };
        let e = export(&odd.init(1, &Device::flex()), GgufQuant::Q4_0, &LINEARS, &dir, &tok).unwrap_err();
        assert!(e.to_string().contains("blk.0.attn_q.weight") && e.to_string().contains("48 values"), "{e}");
        assert!(!dir.exists(), "nothing written");
    }
}
