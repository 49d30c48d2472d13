//! Hugging Face Llama / Qwen2 / Mistral checkpoints as frozen teachers: `config.json` mirrored into a
//! serde struct and converted once into our `DecoderConfig`; weights memory-mapped from
//! `model.safetensors` or the shards named by `model.safetensors.index.json` (f32, f16 or
//! bf16, converted once to f32 as each tensor is built); the folder's `tokenizer.json`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::config::{MambaShape, ModelShape, RopeScaling};
use crate::model::init::WeightSource;
use crate::model::{Decoder, DecoderConfig};

pub const SUPPORTED: [&str; 4] = ["llama", "mistral", "mixtral", "qwen2"];

/// `config.json` as transformers writes it for the Llama, Mistral and Qwen2 families.
#[derive(Debug, Deserialize)]
pub struct HfConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// Older layout: top-level `rope_theta` / `rope_scaling`.
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RopeParams>,
    /// Newer layout (transformers 5): `rope_parameters` holds both.
    pub rope_parameters: Option<RopeParams>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    /// Qwen2: layers below this attend fully (transformers' default 28).
    pub max_window_layers: Option<usize>,
    /// Qwen2 (transformers 5): "full_attention" / "sliding_attention" per layer.
    pub layer_types: Option<Vec<String>>,
    pub hidden_act: Option<String>,
    pub mlp_bias: Option<bool>,
    /// Mixtral: experts per layer, experts per token, the load-balancing coefficient.
    pub num_local_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub router_aux_loss_coef: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParams {
    pub rope_type: Option<String>,
    #[serde(alias = "type")]
    pub kind: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
}

impl HfConfig {
    /// The one conversion from the file's terms to ours; every unsupported feature is an
    /// error that names it.
    pub fn into_config(self, file: &Path) -> Result<DecoderConfig> {
        let bad = |msg: String| Error::input(format!("{}: {msg}", file.display()));
        if !SUPPORTED.contains(&self.model_type.as_str()) {
            return Err(bad(format!(
                "unsupported model_type {:?}; supported: {}",
                self.model_type,
                SUPPORTED.join(", ")
            )));
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(bad(format!("unsupported hidden_act {act:?}; only silu (SwiGLU) is supported")));
        }
        if self.mlp_bias == Some(true) {
            return Err(bad("mlp_bias = true is not supported".into()));
        }
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                self.hidden_size
            )));
        }
        if let Some(hd) = self.head_dim
            && hd * heads != self.hidden_size
        {
            return Err(bad(format!(
                "head_dim {hd} * num_attention_heads {heads} != hidden_size {}: not supported",
                self.hidden_size
            )));
        }
        let kv = self.num_key_value_heads.unwrap_or(heads);
        if kv == 0 || !heads.is_multiple_of(kv) {
            return Err(bad(format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")));
        }
        let params = self.rope_parameters.clone().or(self.rope_scaling.clone());
        let theta = self.rope_theta.or(params.as_ref().and_then(|p| p.rope_theta)).unwrap_or(10_000.0);
        let rope_scaling = match params {
            None => None,
            Some(p) => match p.rope_type.clone().or(p.kind.clone()).as_deref() {
                None | Some("default") => None,
                Some("llama3") => Some(RopeScaling {
                    factor: p.factor.ok_or_else(|| bad("rope scaling llama3 without `factor`".into()))?,
                    low_freq_factor: p.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: p.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: p
                        .original_max_position_embeddings
                        .ok_or_else(|| bad("rope scaling llama3 without `original_max_position_embeddings`".into()))?,
                }),
                Some(other) => return Err(bad(format!("unsupported rope type {other:?}; supported: default, llama3"))),
            },
        };
        let qwen = self.model_type == "qwen2";
        let n = self.num_hidden_layers;
        // Which layers slide, as transformers decides: Llama never (it ignores the keys);
        // Mistral on every layer when `sliding_window` is set; Qwen2 only with
        // use_sliding_window, on the layers that layer_types mark sliding (by default those
        // from max_window_layers on).
        let (window, window_from_layer) = match self.model_type.as_str() {
            "mistral" | "mixtral" => (self.sliding_window, 0),
            "qwen2" => {
                let sliding: Vec<bool> = match &self.layer_types {
                    Some(t) if t.len() != n => return Err(bad(format!("layer_types has {} entries for {n} layers", t.len()))),
                    Some(t) => t.iter().map(|k| match k.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(bad(format!("layer_types: unsupported layer type {other:?}; supported: full_attention, sliding_attention"))),
                    }).collect::<Result<_>>()?,
                    None => (0..n).map(|i| i >= self.max_window_layers.unwrap_or(28)).collect(),
                };
                match self.sliding_window.filter(|_| self.use_sliding_window == Some(true)) {
                    None => (None, 0),
                    Some(w) => {
                        let from = sliding.iter().position(|&s| s).unwrap_or(n);
                        if sliding[from..].iter().any(|&s| !s) {
                            return Err(bad(format!(
                                "layer_types {:?}: only full-attention layers followed by sliding-window layers are supported",
                                self.layer_types.as_deref().unwrap_or_default()
                            )));
                        }
                        if from == n { (None, 0) } else { (Some(w), from) }
                    }
                }
            }
            _ => (None, 0),
        };
        let config = DecoderConfig {
            vocab_size: self.vocab_size,
            shape: ModelShape {
                d_model: self.hidden_size,
                n_layers: self.num_hidden_layers,
                n_heads: heads,
                n_kv_heads: kv,
                d_ff: self.intermediate_size,
                max_seq_len: self.max_position_embeddings,
                rope_theta: theta,
                tie_embeddings: self.tie_word_embeddings.unwrap_or(qwen),
                norm_eps: self.rms_norm_eps,
                layer_pattern: "A".into(),
                window,
                window_from_layer,
                // Qwen2 always has q/k/v biases (and none on o_proj); Llama's
                // `attention_bias` puts one on q, k, v and o_proj alike; Mistral has none.
                qkv_bias: qwen || self.attention_bias.unwrap_or(false),
                o_bias: !qwen && self.attention_bias.unwrap_or(false),
                rope_scaling,
                mamba: MambaShape::default(),
                attention_impl: Default::default(),
                linformer: Default::default(),
                performer: Default::default(),
                moe: match self.model_type.as_str() {
                    "mixtral" => Some(crate::model::config::MoeShape {
                        experts: self.num_local_experts.ok_or_else(|| bad("mixtral: no num_local_experts".into()))?,
                        active: self
                            .num_experts_per_tok
                            .ok_or_else(|| bad("mixtral: no num_experts_per_tok".into()))?,
                        d_ff_expert: self.intermediate_size,
                        every: 1,
                        router_aux_loss: self.router_aux_loss_coef.unwrap_or(0.02),
                        upcycle_noise: 0.01,
                    }),
                    _ => None,
                },
            },
        };
        config.validate().map_err(|e| bad(format!("the converted model is invalid: {e}")))?;
        Ok(config)
    }
}

/// Memory-mapped safetensors files and which file holds which tensor.
pub struct HfWeights {
    maps: Vec<(PathBuf, Mmap)>,
    index: HashMap<String, usize>,
    /// Names the model asked for, so that a tensor it never asks for is reported.
    asked: RefCell<HashSet<String>>,
}

impl HfWeights {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let idx: serde_json::Value = crate::util::read_json(&index_path)?;
            let map = idx["weight_map"]
                .as_object()
                .ok_or_else(|| Error::input(format!("{}: no `weight_map` object", index_path.display())))?;
            let mut names: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            // Our own int8 / int4 exports, read back dequantized.
            let ours: Vec<PathBuf> = ["model.int8.safetensors", "model.int4.safetensors"]
                .iter()
                .map(|n| dir.join(n))
                .filter(|p| p.is_file())
                .collect();
            match ours.as_slice() {
                [one] => vec![one.clone()],
                [] => {
                    return Err(Error::input(format!(
                        "{}: no model.safetensors, model.safetensors.index.json, model.int8.safetensors or \
                         model.int4.safetensors",
                        dir.display()
                    )));
                }
                _ => {
                    return Err(Error::input(format!(
                        "{}: both model.int8.safetensors and model.int4.safetensors: export them to separate folders",
                        dir.display()
                    )));
                }
            }
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.into_iter().enumerate() {
            let file = crate::error::open_regular(&f)?;
            // SAFETY: the file is opened read-only and not modified while mapped (a teacher's
            // weights are frozen inputs); a concurrent writer would be a user error.
            let map =
                unsafe { Mmap::map(&file) }.map_err(|e| Error::input(format!("{}: cannot map: {e}", f.display())))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::input(format!("{}: not a safetensors file: {e}", f.display())))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((f, map));
        }
        Ok(HfWeights { maps, index, asked: RefCell::new(HashSet::new()) })
    }

    /// `name` as the files hold it: ours, or Mixtral's name of a mixture's tensor.
    fn resolve(&self, name: &str) -> String {
        let alias = || {
            let (layer, rest) = name.strip_prefix("model.layers.")?.split_once('.')?;
            let (ours, tail) = rest.split_once(".weight")?;
            let m = crate::export::native::mixtral_name(ours)?;
            Some(format!("model.layers.{layer}.{m}.weight{tail}"))
        };
        match self.index.contains_key(name) {
            true => name.to_string(),
            false => alias().filter(|a| self.index.contains_key(a)).unwrap_or_else(|| name.to_string()),
        }
    }

    fn view<'a>(&'a self, name: &str) -> Result<(&'a Path, safetensors::tensor::TensorView<'a>)> {
        let name = &self.resolve(name);
        self.asked.borrow_mut().insert(name.to_string());
        let &i = self.index.get(name).ok_or_else(|| Error::input(format!("missing tensor `{name}`")))?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).expect("validated at open");
        let view = st.tensor(name).map_err(|e| Error::input(format!("{}: `{name}`: {e}", path.display())))?;
        match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok((path.as_path(), view)),
            // Our int8 / int4 exports: read with their `_scale` (checked in `quantized`).
            Dtype::I8 | Dtype::U8 => Ok((path.as_path(), view)),
            other => Err(Error::input(format!(
                "{}: tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16",
                path.display()
            ))),
        }
    }

    /// An int8 (`I8` + f32 scale per row) or int4 (`U8` nibbles + one f16 or f32 scale per
    /// group of values along each row: Q4_0 or int4-g<N>) matrix of our exports, dequantized;
    /// every shape checked before it is used.
    fn quantized(
        &self,
        name: &str,
        path: &Path,
        view: &safetensors::tensor::TensorView,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let bad = |msg: String| Error::input(format!("{}: tensor `{name}`{msg}", path.display()));
        let &[rows, cols] = view.shape() else {
            return Err(bad(format!(" is {:?} with shape {:?}: expected a matrix", view.dtype(), view.shape())));
        };
        let sname = format!("{name}_scale");
        let (_, s) = self.view(&sname).map_err(|e| bad(format!(" is quantized but its scale: {e}")))?;
        if view.dtype() == Dtype::I8 {
            if s.dtype() != Dtype::F32 || s.shape() != [rows] {
                return Err(bad(format!(
                    ": `{sname}` is {:?} {:?}, expected F32 [{rows}] for an I8 [{rows}, {cols}] matrix",
                    s.dtype(),
                    s.shape()
                )));
            }
            let scales = crate::util::f32s_from_le(s.data());
            let q: Vec<i8> = view.data().iter().map(|b| *b as i8).collect();
            return Ok((crate::quant::int8::dequantize_rows(&q, &scales, cols), vec![rows, cols]));
        }
        // int4: two values per byte, `groups` scales per row.
        let values = cols * 2;
        let groups = match s.shape() {
            &[r, g] if r == rows && g > 0 && values.is_multiple_of(g) && (values / g).is_multiple_of(2) => g,
            other => {
                return Err(bad(format!(
                    " is int4 with {values} values per row: `{sname}` has shape {other:?}, expected [{rows}, G] \
                     with G dividing them into groups of an even size"
                )));
            }
        };
        let scales: Vec<f32> = match s.dtype() {
            Dtype::F32 => crate::util::f32s_from_le(s.data()),
            Dtype::F16 => s.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(bad(format!(": `{sname}` has dtype {other:?}, expected F16 or F32"))),
        };
        let w = view
            .data()
            .chunks_exact(values / groups / 2)
            .zip(scales)
            .flat_map(|(q, d)| crate::quant::int4::dequantize_group(d, q))
            .collect();
        Ok((w, vec![rows, values]))
    }
}

/// A NaN or infinity in a teacher's weights would surface as a NaN loss much later.
fn non_finite(path: &Path, name: &str, value: f32, j: usize) -> Error {
    Error::input(format!(
        "{}: tensor `{name}` holds a non-finite value ({value}) at flat index {j}: the checkpoint is damaged",
        path.display()
    ))
}

impl WeightSource for HfWeights {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let view = self.view(name)?.1;
        let mut shape = view.shape().to_vec();
        if matches!(view.dtype(), Dtype::I8 | Dtype::U8) {
            // A quantized matrix is read with its scale.
            self.asked.borrow_mut().insert(format!("{}_scale", self.resolve(name)));
        }
        // int4 stores two values per byte.
        if let (Dtype::U8, Some(last)) = (view.dtype(), shape.last_mut()) {
            *last *= 2;
        }
        Ok(shape)
    }

    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (path, view) = self.view(name)?;
        let bytes = view.data();
        let (data, shape): (Vec<f32>, Vec<usize>) = match view.dtype() {
            Dtype::F32 => (crate::util::f32s_from_le(bytes), view.shape().to_vec()),
            Dtype::F16 => (
                bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                view.shape().to_vec(),
            ),
            Dtype::BF16 => (
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                view.shape().to_vec(),
            ),
            Dtype::I8 | Dtype::U8 => self.quantized(name, path, &view)?,
            _ => unreachable!("checked by view"),
        };
        if let Some(j) = data.iter().position(|x| !x.is_finite()) {
            return Err(non_finite(path, name, data[j], j));
        }
        Ok((data, shape))
    }

    fn get_data(&self, name: &str) -> Result<(TensorData, Vec<usize>)> {
        let (path, view) = self.view(name)?;
        // Half precision is passed on as stored (little-endian, as safetensors and the
        // tensor data both are); the dtype the model asks for is made from it on arrival.
        let (dtype, exponent_mask) = match view.dtype() {
            Dtype::BF16 if cfg!(target_endian = "little") => (DType::BF16, 0x7f80u16),
            Dtype::F16 if cfg!(target_endian = "little") => (DType::F16, 0x7c00u16),
            _ => return self.get(name).map(crate::model::init::flat_f32),
        };
        let bytes = view.data();
        // All exponent bits set: an infinity or a NaN (see `get`).
        let bad = bytes.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) & exponent_mask == exponent_mask);
        if let Some(j) = bad {
            let bits = u16::from_le_bytes([bytes[2 * j], bytes[2 * j + 1]]);
            let value = if dtype == DType::BF16 {
                half::bf16::from_bits(bits).to_f32()
            } else {
                half::f16::from_bits(bits).to_f32()
            };
            return Err(non_finite(path, name, value, j));
        }
        Ok((TensorData::from_bytes_vec(bytes.to_vec(), [bytes.len() / 2], dtype), view.shape().to_vec()))
    }

    fn check_all_used(&self) -> Result<()> {
        let asked = self.asked.borrow();
        let mut unused: Vec<(&String, &usize)> = self
            .index
            .iter()
            // Rotary frequencies that older checkpoints store as a buffer: a function of the
            // config, which we compute from it as transformers does.
            .filter(|(n, _)| !asked.contains(*n) && !n.ends_with(".rotary_emb.inv_freq"))
            .collect();
        unused.sort();
        match unused.first() {
            None => Ok(()),
            Some(&(name, &i)) => Err(Error::input(format!(
                "{}: tensor `{name}` is not used by the model that config.json describes ({} unused in all); \
                 refusing to drop it silently: the config does not match the weights or the architecture is not supported",
                self.maps[i].0.display(),
                unused.len()
            ))),
        }
    }
}

/// The model a Hugging Face folder's config.json describes (nothing else read).
pub fn config(dir: &Path) -> Result<DecoderConfig> {
    let cfg_path = dir.join("config.json");
    let text = crate::error::read_to_string(&cfg_path)?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", cfg_path.display())))?;
    hf.into_config(&cfg_path)
}

/// Load a Hugging Face folder: the model (frozen, on `device`, its weights in `dtype`, each
/// converted as it is read) and its tokenizer.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<(Decoder, Tokenizer)> {
    let config = config(dir)?;
    let weights = HfWeights::open(dir)?;
    let model = config.load(&weights, device, dtype).map_err(|e| Error::input(format!("{}: {e}", dir.display())))?;
    let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::input(format!(
            "{}: tokenizer.json has {} tokens but the model's vocab_size is {}",
            dir.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    Ok((model, tokenizer))
}

#[cfg(test)]
mod tests;
