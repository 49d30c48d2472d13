//! A GGUF file we wrote, back as a [`Decoder`]: its tensors dequantized and renamed to our
//! Hugging Face names, q/k rows of the `llama` architecture un-permuted, the metadata checked
//! against the model it should hold. `distill eval --exported` measures the file itself this way.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::tensor::{DType, Device};

use super::gguf::{Gguf, GgufTensor, Value};
use super::gguf_model::{LAYER_NAMES, ROPE_FREQS, ROPE_SCALING_KEY, TOP_NAMES, rope_freqs, source_row};
use crate::error::{Error, Result};
use crate::model::config::RopeScaling;
use crate::model::init::WeightSource;
use crate::model::{Decoder, DecoderConfig};

/// A tensor's values as f32.
fn dequantize(t: &GgufTensor) -> Vec<f32> {
    crate::quant::ggml_dequant::dequantize(t.ty, &t.data)
}

/// The inverse of [`permute_rows`].
fn unpermute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0.0; w.len()];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        let src = source_row(r, hd);
        out[src * cols..(src + 1) * cols].copy_from_slice(row);
    }
    out
}

/// Our Hugging Face name for a GGUF tensor name (the exporter's tables, read backwards).
fn hf_name(name: &str) -> Option<String> {
    let ours = |table: &[(&'static str, &str)], theirs: &str| table.iter().find(|(_, g)| *g == theirs).map(|(o, _)| *o);
    if let Some(t) = ours(&TOP_NAMES, name) {
        return Some(t.into());
    }
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let (short, kind) = rest.rsplit_once('.')?;
    let short = match short {
        "ffn_gate_inp" => "mlp.gate",
        s => ours(&LAYER_NAMES, s)?,
    };
    Some(format!("model.layers.{}.{short}.{kind}", layer.parse::<usize>().ok()?))
}

/// A mixture's expert tensor (`ffn_{gate,up,down}_exps`, `[experts, rows, cols]`): each
/// expert's name and index, as our model asks for them one by one.
fn expert_names(name: &str, experts: usize) -> Option<Vec<(String, usize)>> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let proj = match rest {
        "ffn_gate_exps.weight" => "gate_proj",
        "ffn_up_exps.weight" => "up_proj",
        "ffn_down_exps.weight" => "down_proj",
        _ => return None,
    };
    let layer = layer.parse::<usize>().ok()?;
    Some((0..experts).map(|e| (format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight"), e)).collect())
}

/// The file's architecture, one we write.
fn architecture_of(g: &Gguf, what: &str) -> Result<String> {
    match g.get("general.architecture") {
        Some(Value::Str(a)) if a == "llama" || a == "qwen2" => Ok(a.clone()),
        other => {
            Err(Error::input(format!("{what}: general.architecture is {other:?}, expected \"llama\" or \"qwen2\"")))
        }
    }
}

/// A GGUF file's weights under our names, dequantized to f32 one tensor at a time as the model
/// asks for it (an 8B teacher never exists as f32 in whole: each tensor is cast to the run's
/// dtype as it arrives).
struct GgufWeights<'a> {
    /// Our Hugging Face name -> the file's tensor, the heads its rows were permuted by, and
    /// for a mixture's stacked experts which one.
    map: HashMap<String, (&'a GgufTensor, Option<usize>, Option<usize>)>,
    asked: RefCell<HashSet<String>>,
    what: String,
}

impl WeightSource for GgufWeights<'_> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.asked.borrow_mut().insert(name.into());
        self.map
            .get(name)
            .map(|(t, _, expert)| if expert.is_some() { shape_of(t)[1..].to_vec() } else { shape_of(t) })
            .ok_or_else(|| self.missing(name))
    }

    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.asked.borrow_mut().insert(name.into());
        let (t, heads, expert) = self.map.get(name).ok_or_else(|| self.missing(name))?;
        let mut shape = shape_of(t);
        let mut v = dequantize(t);
        if let Some(e) = expert {
            // (Each expert dequantizes the whole stack: the files this reads are students.)
            shape.remove(0);
            let n = shape.iter().product::<usize>();
            v = v[e * n..(e + 1) * n].to_vec();
        }
        if let Some(n) = heads {
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            v = unpermute_rows(&v, shape[0], cols, *n);
        }
        Ok((v, shape))
    }

    fn check_all_used(&self) -> Result<()> {
        let asked = self.asked.borrow();
        let mut unused: Vec<&String> = self.map.keys().filter(|n| !asked.contains(*n)).collect();
        unused.sort();
        match unused.first() {
            None => Ok(()),
            Some(n) => Err(Error::input(format!("{}: tensor for `{n}` is not used by the run's model", self.what))),
        }
    }
}

/// A tensor's shape outermost first (`ne` reversed), as our loaders take it.
fn shape_of(t: &GgufTensor) -> Vec<usize> {
    t.ne.iter().rev().map(|&d| d as usize).collect()
}

impl GgufWeights<'_> {
    fn missing(&self, name: &str) -> Error {
        Error::input(format!("{}: no tensor for `{name}`", self.what))
    }
}

/// The model a GGUF file describes, from its metadata (`what`, its path, in errors): ours, or a
/// llama/qwen2 file as llama.cpp's converter writes it. Keys llama.cpp itself treats as
/// optional take its defaults: `rope.freq_base` 10,000, `rope.dimension_count` the head size,
/// `vocab_size` the embedding's rows.
pub fn config_of(g: &Gguf, what: &str) -> Result<DecoderConfig> {
    let arch = architecture_of(g, what)?;
    let u = |key: &str| key_u32(g, &format!("{arch}.{key}"), what);
    let f = |key: &str| key_f32(g, &format!("{arch}.{key}"), what);
    let or = |key: &str| g.get(&format!("{arch}.{key}")).is_some();
    let has = |name: &str| g.tensor(name).is_some();
    let shape = crate::model::ModelShape {
        d_model: u("embedding_length")?,
        n_layers: u("block_count")?,
        n_heads: u("attention.head_count")?,
        n_kv_heads: u("attention.head_count_kv")?,
        d_ff: u("feed_forward_length")?,
        max_seq_len: u("context_length")?,
        rope_theta: if or("rope.freq_base") { f("rope.freq_base")? } else { 10_000.0 },
        tie_embeddings: !has("output.weight"),
        norm_eps: f("attention.layer_norm_rms_epsilon")?,
        layer_pattern: "A".into(),
        window: None,
        qkv_bias: has("blk.0.attn_q.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        window_from_layer: 0,
        rope_scaling: rope_scaling_of(g, what)?,
        mamba: Default::default(),
        attention_impl: Default::default(),
        linformer: Default::default(),
        performer: Default::default(),
        moe: match or("expert_count") {
            true => Some(crate::model::config::MoeShape {
                experts: u("expert_count")?,
                active: u("expert_used_count")?,
                d_ff_expert: u("feed_forward_length")?,
                every: 1,
                router_aux_loss: 0.01,
                upcycle_noise: 0.01,
            }),
            false => None,
        },
    };
    let vocab_size = match (or("vocab_size"), g.tensor("token_embd.weight")) {
        (true, _) => u("vocab_size")?,
        (false, Some(t)) if t.ne.len() == 2 => t.ne[1] as usize,
        _ => return Err(Error::input(format!("{what}: no `{arch}.vocab_size` and no 2-D token_embd.weight"))),
    };
    let config = DecoderConfig { vocab_size, shape };
    config.validate().map_err(|e| Error::input(format!("{what}: {e}")))?;
    if or("rope.dimension_count") && u("rope.dimension_count")? != config.head_dim() {
        return Err(Error::input(format!(
            "{what}: `{arch}.rope.dimension_count` is not the head size {}: partial RoPE is not supported",
            config.head_dim()
        )));
    }
    Ok(config)
}

/// The metadata value `key`, which must be there.
fn key_value<'a>(g: &'a Gguf, key: &str, what: &str) -> Result<&'a Value> {
    g.get(key).ok_or_else(|| Error::input(format!("{what}: no `{key}`")))
}

/// A u32 metadata value.
fn key_u32(g: &Gguf, key: &str, what: &str) -> Result<usize> {
    match key_value(g, key, what)? {
        Value::U32(x) => Ok(*x as usize),
        other => Err(Error::input(format!("{what}: `{key}` is {other:?}, expected a u32"))),
    }
}

/// An f32 metadata value as the shortest decimal that is this f32 (1e-5, not 9.99999974e-6):
/// the value that was written, as the recipe spelled it.
fn key_f32(g: &Gguf, key: &str, what: &str) -> Result<f64> {
    match key_value(g, key, what)? {
        Value::F32(x) => Ok(x.to_string().parse().expect("a float's own spelling")),
        other => Err(Error::input(format!("{what}: `{key}` is {other:?}, expected an f32"))),
    }
}

/// The Llama-3 RoPE scaling our exporter wrote (`distill.rope_scaling.*` beside llama.cpp's
/// `rope_freqs.weight`), checked against that tensor; none without either. A `rope_freqs`
/// from another converter (no parameters to rebuild the model's own from) is refused.
fn rope_scaling_of(g: &Gguf, what: &str) -> Result<Option<RopeScaling>> {
    let key = |k: &str| format!("{ROPE_SCALING_KEY}.{k}");
    let f = |k: &str| key_f32(g, &key(k), what);
    let scaling = match (g.get(&key("factor")), g.tensor(ROPE_FREQS)) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(Error::input(format!(
                "{what}: a rope_freqs tensor without `{ROPE_SCALING_KEY}.*` keys (not a file distill wrote): its \
                 per-frequency RoPE factors cannot be read back as Llama-3 scaling"
            )));
        }
        (Some(_), _) => RopeScaling {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: key_u32(g, &key("original_max_position_embeddings"), what)?,
        },
    };
    Ok(Some(scaling))
}

/// A GGUF file on disk parsed by `parse` ([`Gguf::parse`], or [`Gguf::parse_header`] for
/// its shapes alone) from a memory map, with its path for errors.
pub fn read(path: &Path, parse: fn(&[u8], &str) -> Result<Gguf>) -> Result<(Gguf, String)> {
    let what = path.display().to_string();
    let f = crate::error::open_regular(path)?;
    let meta = f.metadata().map_err(|e| Error::input(format!("{what}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::input(format!("{what}: not a regular file (expected a .gguf model)")));
    }
    // Safety: the file is only read; a concurrent writer is the user's error, as for any reader.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::input(format!("{what}: {e}")))?;
    let g = parse(&map, &what)?;
    Ok((g, what))
}

/// Read and load a GGUF file (ours or llama.cpp's), as the model its metadata describes.
pub fn open(path: &Path, device: &Device) -> Result<Decoder> {
    open_as(path, device, DType::F32)
}

/// [`open`], each tensor cast to `dtype` as it is dequantized.
pub fn open_as(path: &Path, device: &Device, dtype: DType) -> Result<Decoder> {
    let (g, what) = read(path, Gguf::parse)?;
    load_as(&g, &config_of(&g, &what)?, device, dtype, &what)
}

/// The model `config` with its weights from `g` (`what`, its path, in errors). The file's
/// metadata must describe `config`; a tensor the model does not use is an error.
pub fn load(g: &Gguf, config: &DecoderConfig, device: &Device, what: &str) -> Result<Decoder> {
    load_as(g, config, device, DType::F32, what)
}

/// [`load`], each tensor cast to `dtype` as it is dequantized.
pub fn load_as(g: &Gguf, config: &DecoderConfig, device: &Device, dtype: DType, what: &str) -> Result<Decoder> {
    let arch = architecture_of(g, what)?;
    let s = &config.shape;
    for (key, want) in [
        ("block_count", s.n_layers),
        ("embedding_length", s.d_model),
        ("feed_forward_length", s.moe.as_ref().map_or(s.d_ff, |m| m.d_ff_expert)),
        ("attention.head_count", s.n_heads),
        ("attention.head_count_kv", s.n_kv_heads),
        ("vocab_size", config.vocab_size),
        ("expert_count", s.moe.as_ref().map_or(0, |m| m.experts)),
        ("expert_used_count", s.moe.as_ref().map_or(0, |m| m.active)),
    ] {
        let key = format!("{arch}.{key}");
        // Without the key (older converters) the embedding's shape is checked at the load.
        if key.ends_with(".vocab_size") && g.get(&key).is_none() {
            continue;
        }
        // A dense model's file has no expert keys.
        if key.contains(".expert_") && want == 0 && g.get(&key).is_none() {
            continue;
        }
        if g.get(&key) != Some(&Value::U32(want as u32)) {
            return Err(Error::input(format!("{what}: {key} is {:?}, the run's model has {want}", g.get(&key))));
        }
    }
    // The RoPE factors llama.cpp reads must be the ones the shape's scaling gives.
    let want = rope_freqs(s, config.head_dim()).map(|(f, _)| f);
    let got = g.tensor(ROPE_FREQS).map(dequantize);
    if want.as_ref().map(|w| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        != got.as_ref().map(|w| w.iter().map(|x| x.to_bits()).collect())
    {
        return Err(Error::input(format!(
            "{what}: rope_freqs.weight is {got:?}, the model's RoPE scaling gives {want:?}"
        )));
    }
    let mut map = HashMap::new();
    for t in g.tensors.iter().filter(|t| t.name != ROPE_FREQS) {
        let experts = s.moe.as_ref().map_or(0, |m| m.experts);
        if let Some(names) = expert_names(&t.name, experts) {
            if shape_of(t).first() != Some(&experts) {
                return Err(Error::input(format!(
                    "{what}: tensor `{}` has shape {:?}, expected {experts} experts first",
                    t.name,
                    shape_of(t)
                )));
            }
            for (n, e) in names {
                map.insert(n, (t, None, Some(e)));
            }
            continue;
        }
        let name = hf_name(&t.name)
            .ok_or_else(|| Error::input(format!("{what}: tensor `{}` is not one of a llama model's", t.name)))?;
        // llama.cpp's converter permutes the q/k rows of `llama` files for its RoPE layout.
        let heads = match (arch.as_str(), t.name.rsplit('.').nth(1)) {
            ("llama", Some("attn_q")) => Some(s.n_heads),
            ("llama", Some("attn_k")) => Some(s.n_kv_heads),
            _ => None,
        };
        map.insert(name, (t, heads, None));
    }
    let weights = GgufWeights { map, asked: RefCell::new(HashSet::new()), what: what.into() };
    config.load(&weights, device, dtype).map_err(|e| Error::input(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::gguf_model::{GgufQuant, Vocab, to_gguf};
    use crate::quant::fake_quant::{Plan, Scheme, round_trip_model};
    use std::path::Path;

    /// An HF fixture's model and its tokenizer as GGUF metadata.
    fn fixture_model(name: &str) -> (Decoder, Vocab) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name);
        let (model, tok) = crate::teacher::hf::load(&dir, &Device::flex(), DType::F32).unwrap();
        let j: serde_json::Value = crate::util::read_json(&dir.join("tokenizer.json")).unwrap();
        let vocab = Vocab::from_tokenizer_json(&j, model.config.vocab_size, tok.eos_id, tok.bos_id, "t").unwrap();
        (model, vocab)
    }

    /// A model written as Q8_0/Q4_0 GGUF and loaded back computes exactly what its round trip
    /// (the QAT forward, the PTQ evaluation) computes: the file's perplexity is the trained
    /// one. f16 loads back as the f16 rounding of every matrix.
    #[test]
    fn loaded_file_is_the_round_trip_model() {
        for fixture in ["llama-gqa", "llama-mqa-rope3"] {
            round_trips(fixture);
        }
    }

    fn round_trips(fixture: &str) {
        let dev = Device::flex();
        let (model, v) = fixture_model(fixture);
        let vocab = || v.clone();
        let ids = crate::model::token_tensor(&[5, 9, 77, 1000, 3, 3, 41], &dev);
        let bits = |m: &Decoder| m.forward(ids.clone()).into_data().iter::<f32>().map(f32::to_bits).collect::<Vec<_>>();
        for (q, scheme) in [(GgufQuant::Q8_0, Scheme::Q8_0), (GgufQuant::Q4_0, Scheme::Q4_0)] {
            for (emb, head) in [(false, false), (true, true)] {
                let g = to_gguf(&model, q, emb, head, vocab()).unwrap();
                assert_eq!(config_of(&g, "m.gguf").unwrap(), model.config);
                let back = load(&g, &model.config, &dev, "m.gguf").unwrap();
                let rt = round_trip_model(&model, &Plan { scheme, embeddings: emb, lm_head: head, activations: false })
                    .unwrap();
                assert_eq!(bits(&back), bits(&rt), "{scheme:?} embeddings {emb}");
            }
        }
        let g = to_gguf(&model, GgufQuant::F16, false, false, vocab()).unwrap();
        let back = load(&g, &model.config, &dev, "m.gguf").unwrap();
        let (a, b) = (back.forward(ids.clone()), model.forward(ids.clone()));
        let err: f32 = (a - b).abs().max().into_scalar();
        assert!(err > 0.0 && err < 1e-2, "f16: {err}");
        assert_eq!(g.tensor("rope_freqs.weight").is_some(), model.config.shape.rope_scaling.is_some(), "{fixture}");
    }

    /// A mixture of experts (upcycled from a fixture, every layer) written as Q8_0 and read
    /// back is its QAT round trip, bit for bit: the experts stacked per projection and split
    /// again, the router kept f32; its metadata gives back the same shape.
    #[test]
    fn moe_file_round_trips() {
        let dev = Device::flex();
        let (dense, vocab) = fixture_model("llama-gqa");
        let d_ff = dense.config.shape.d_ff;
        let s = crate::model::config::MoeShape {
            experts: 3,
            active: 2,
            d_ff_expert: d_ff,
            every: 1,
            router_aux_loss: 0.01,
            upcycle_noise: 0.01,
        };
        let model = crate::model::moe::upcycle_decoder(dense, &s, 4);
        let ids = crate::model::token_tensor(&[5, 9, 77, 1000, 3, 3, 41], &dev);
        let g = to_gguf(&model, GgufQuant::Q8_0, false, false, vocab).unwrap();
        assert_eq!(g.get("llama.expert_count"), Some(&Value::U32(3)));
        assert_eq!(g.tensor("blk.0.ffn_up_exps.weight").unwrap().ne, vec![64, d_ff as u64, 3]);
        assert_eq!(g.tensor("blk.0.ffn_gate_inp.weight").unwrap().ty, crate::export::gguf::GgmlType::F32);
        assert_eq!(config_of(&g, "m.gguf").unwrap(), model.config);
        let back = load(&g, &model.config, &dev, "m.gguf").unwrap();
        let rt = round_trip_model(&model, &Plan::linears(Scheme::Q8_0)).unwrap();
        let (a, b) = (back.forward(ids.clone()), rt.forward(ids.clone()));
        let err: f32 = (a - b).abs().max().into_scalar();
        let moved: f32 = (back.forward(ids.clone()) - model.forward(ids.clone())).abs().max().into_scalar();
        // (Not bit for bit: the router read back is a transposed view of the stored [out, in]
        // matrix, the original a contiguous one, and the matmul sums in another order.)
        assert!(err < 1e-6 && moved > 1e-3, "file vs round trip {err}, vs f32 {moved}");
    }

    /// Llama-3 RoPE scaling goes to llama.cpp as the converter writes it: `rope_freqs.weight`
    /// holds its `rope_factors` (computed here as convert_hf_to_gguf.py does, from the
    /// wavelengths, not from our frequencies), and our parameters ride along; a file whose
    /// factors disagree with them, or that has factors but no parameters, is refused.
    #[test]
    fn rope_scaling_is_written_as_llama_cpp_reads_it() {
        let dev = Device::flex();
        let (model, vocab) = fixture_model("llama-mqa-rope3");
        let mut g = to_gguf(&model, GgufQuant::F16, false, false, vocab).unwrap();
        // The converter: factor 8, low 1, high 4, original context 64, theta 5e5, head dim 16.
        let (factor, low, high, old, base, dim) = (8.0f64, 1.0f64, 4.0f64, 64.0f64, 500000.0f64, 16);
        let want: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let freq = 1.0 / base.powf((2 * i) as f64 / dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor as f32
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect();
        let got = dequantize(g.tensor("rope_freqs.weight").unwrap());
        assert!(want.iter().any(|&f| f != 1.0 && f != 8.0), "a smoothed frequency is covered: {want:?}");
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b, "{got:?} vs {want:?}");
        }
        assert_eq!(config_of(&g, "m.gguf").unwrap().shape.rope_scaling, model.config.shape.rope_scaling);
        // Factors that disagree with the parameters.
        let i = g.tensors.iter().position(|t| t.name == "rope_freqs.weight").unwrap();
        let saved = g.tensors[i].clone();
        g.tensors[i].data[0] ^= 1;
        let e = load(&g, &model.config, &dev, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("rope_freqs.weight is"), "{e}");
        // Factors without parameters (another converter's file).
        g.tensors[i] = saved;
        g.kv.retain(|(k, _)| !k.starts_with("distill.rope_scaling"));
        let e = config_of(&g, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("not a file distill wrote"), "{e}");
    }

    /// A file for another model is refused naming the key.
    #[test]
    fn metadata_must_match_the_run() {
        let dev = Device::flex();
        let (model, vocab) = fixture_model("llama-gqa");
        let g = to_gguf(&model, GgufQuant::Q8_0, false, false, vocab).unwrap();
        let mut other = model.config.clone();
        other.shape.n_layers = 3;
        let e = load(&g, &other, &dev, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("m.gguf: llama.block_count is Some(U32(2)), the run's model has 3"), "{e}");
    }
}
