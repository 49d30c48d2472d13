//! Hugging Face Llama / Qwen2 checkpoints as frozen teachers: `config.json` mirrored into a
//! serde struct and converted once into our `DecoderConfig`; weights memory-mapped from
//! `model.safetensors` or the shards named by `model.safetensors.index.json` (f32, f16 or
//! bf16, converted once to f32 as each tensor is built); the folder's `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::init::WeightSource;
use crate::model::{Decoder, DecoderConfig};
use crate::recipe::{MambaShape, ModelShape, RopeScaling};

pub const SUPPORTED: [&str; 2] = ["llama", "qwen2"];

/// `config.json` as transformers writes it for the Llama and Qwen2 families.
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
    pub hidden_act: Option<String>,
    pub mlp_bias: Option<bool>,
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
            return Err(bad(format!("unsupported model_type {:?}; supported: {}", self.model_type, SUPPORTED.join(", "))));
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(bad(format!("unsupported hidden_act {act:?}; only silu (SwiGLU) is supported")));
            }
        }
        if self.mlp_bias == Some(true) {
            return Err(bad("mlp_bias = true is not supported".into()));
        }
        let heads = self.num_attention_heads;
        if heads == 0 || self.hidden_size % heads != 0 {
            return Err(bad(format!("hidden_size {} is not a multiple of num_attention_heads {heads}", self.hidden_size)));
        }
        if let Some(hd) = self.head_dim {
            if hd * heads != self.hidden_size {
                return Err(bad(format!("head_dim {hd} * num_attention_heads {heads} != hidden_size {}: not supported", self.hidden_size)));
            }
        }
        let kv = self.num_key_value_heads.unwrap_or(heads);
        if kv == 0 || heads % kv != 0 {
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
        Ok(DecoderConfig {
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
                window: if self.use_sliding_window == Some(true) { self.sliding_window } else { None },
                // Qwen2 always has q/k/v biases; Llama only with `attention_bias`.
                qkv_bias: qwen || self.attention_bias.unwrap_or(false),
                rope_scaling,
                mamba: MambaShape::default(),
            },
        })
    }
}

/// Memory-mapped safetensors files and which file holds which tensor.
pub struct HfWeights {
    maps: Vec<(PathBuf, Mmap)>,
    index: HashMap<String, usize>,
}

impl HfWeights {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let idx: serde_json::Value = crate::util::read_json(&index_path)?;
            let map = idx["weight_map"].as_object().ok_or_else(|| {
                Error::input(format!("{}: no `weight_map` object", index_path.display()))
            })?;
            let mut names: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::input(format!(
                "{}: no model.safetensors or model.safetensors.index.json", dir.display())));
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.into_iter().enumerate() {
            let file = std::fs::File::open(&f).map_err(|e| Error::input(format!("{}: {e}", f.display())))?;
            // SAFETY: the file is opened read-only and not modified while mapped (a teacher's
            // weights are frozen inputs); a concurrent writer would be a user error.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::input(format!("{}: cannot map: {e}", f.display())))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::input(format!("{}: not a safetensors file: {e}", f.display())))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((f, map));
        }
        Ok(HfWeights { maps, index })
    }
}

impl WeightSource for HfWeights {
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let &i = self.index.get(name).ok_or_else(|| Error::input(format!("missing tensor `{name}`")))?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).expect("validated at open");
        let view = st.tensor(name).map_err(|e| Error::input(format!("{}: `{name}`: {e}", path.display())))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => crate::util::f32s_from_le(bytes),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Error::input(format!(
                    "{}: tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16", path.display())))
            }
        };
        // A NaN or infinity in a teacher's weights would surface as a NaN loss much later.
        if let Some(j) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "{}: tensor `{name}` holds a non-finite value ({}) at flat index {j}: the checkpoint is damaged",
                path.display(), data[j])));
        }
        Ok((data, view.shape().to_vec()))
    }
}

/// Load a Hugging Face folder: the model (frozen, on `device`, its weights in `dtype`, each
/// converted as it is read) and its tokenizer.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<(Decoder, Tokenizer)> {
    let cfg_path = dir.join("config.json");
    let text = crate::error::read_to_string(&cfg_path)?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{}: {e}", cfg_path.display())))?;
    let config = hf.into_config(&cfg_path)?;
    let weights = HfWeights::open(dir)?;
    let model = config.load(&weights, device, dtype).map_err(|e| Error::input(format!("{}: {e}", dir.display())))?;
    let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::input(format!(
            "{}: tokenizer.json has {} tokens but the model's vocab_size is {}",
            dir.display(), tokenizer.vocab_size(), config.vocab_size)));
    }
    Ok((model, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, Tensor, TensorData};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
    }

    fn reference(dir: &Path) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let f = |n: &str| -> Vec<f32> {
            crate::util::f32s_from_le(st.tensor(n).unwrap().data())
        };
        let ids = st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        (ids, f("logits_f32"), f("logits_native"))
    }

    /// Logits of tiny random models made and run by transformers 5.17 (scripts/make_hf_fixtures.py):
    /// Llama GQA in f32, Llama MQA with Llama-3 RoPE scaling in sharded bf16, Qwen2 with
    /// q/k/v bias and tied embeddings in f16.
    #[test]
    fn logits_match_transformers() {
        let dev = Device::flex();
        for (name, native_tol) in [("llama-gqa", 1e-4), ("llama-mqa-rope3", 2e-2), ("qwen2-tied", 2e-2)] {
            let dir = fixture(name);
            let (model, _) = load(&dir, &dev, DType::F32).unwrap();
            let (ids, want_f32, want_native) = reference(&dir);
            let t = ids.len();
            let got: Vec<f32> = model
                .forward(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &dev))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let err = |w: &[f32]| got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err(&want_f32) < 1e-4, "{name}: {} vs transformers in f32", err(&want_f32));
            assert!(err(&want_native) < native_tol, "{name}: {} vs transformers in its dtype", err(&want_native));
        }
        // Run in the stored precision (what `teacher.dtype` does), against transformers run in it.
        for (name, dtype) in [("llama-mqa-rope3", burn::tensor::DType::BF16), ("qwen2-tied", burn::tensor::DType::F16)] {
            let dir = fixture(name);
            // Loaded straight into the half dtype, tensor by tensor: the same model as loading
            // in f32 and casting the whole.
            let model = load(&dir, &dev, dtype).unwrap().0;
            assert_eq!(model.embed.weight.val().dtype(), dtype);
            let (ids, want_f32, want_native) = reference(&dir);
            let t = ids.len();
            let run = |m: &Decoder| -> Vec<f32> {
                m.forward(Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &dev)).into_data().try_to_vec::<f32>().unwrap()
            };
            let got = run(&model);
            assert_eq!(got, run(&load(&dir, &dev, DType::F32).unwrap().0.cast(dtype)), "{name}: direct vs cast");
            let err = |w: &[f32]| got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!("{name} in {dtype:?}: max abs diff {} vs transformers in {dtype:?}, {} vs f32", err(&want_native), err(&want_f32));
            assert!(err(&want_native) < 2e-2 && err(&want_f32) < 5e-2, "{name} in {dtype:?}: {} / {}", err(&want_native), err(&want_f32));
        }
        let (m, _) = load(&fixture("qwen2-tied"), &dev, DType::F32).unwrap();
        assert!(m.lm_head.is_none() && m.config.shape.qkv_bias);
        let (m, _) = load(&fixture("llama-mqa-rope3"), &dev, DType::F32).unwrap();
        assert_eq!(m.config.shape.rope_scaling.as_ref().unwrap().factor, 8.0);
        assert_eq!(m.config.shape.rope_theta, 500000.0);
    }

    #[test]
    fn tokenizer_matches_transformers() {
        let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_parity.json")).unwrap()).unwrap();
        let tok = Tokenizer::load(&fixture("llama-gqa").join("tokenizer.json")).unwrap();
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 7);
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        }
    }

    fn copy_fixture(name: &str, tag: &str) -> PathBuf {
        let src = fixture(name);
        let dst = std::env::temp_dir().join(format!("distill-hf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        dst
    }

    #[test]
    fn errors_name_the_problem() {
        let dev = Device::flex();
        let msg = |dir: &Path| match load(dir, &dev, DType::F32) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
            Ok(_) => panic!("expected an error"),
        };
        // Unsupported architecture: the supported ones are listed.
        let d = copy_fixture("llama-gqa", "arch");
        let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"llama\"", "\"gemma\"");
        std::fs::write(d.join("config.json"), cfg).unwrap();
        assert!(msg(&d).contains("unsupported model_type \"gemma\"; supported: llama, qwen2"), "{}", msg(&d));
        // A missing tensor is named.
        let d = copy_fixture("llama-gqa", "missing");
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<(String, safetensors::tensor::TensorView)> =
            st.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight").collect();
        std::fs::write(d.join("model.safetensors"), safetensors::serialize(kept, None).unwrap()).unwrap();
        assert!(msg(&d).contains("missing tensor `model.layers.1.mlp.up_proj.weight`"), "{}", msg(&d));
        // A tensor with the wrong shape is named with both shapes.
        let d = copy_fixture("llama-gqa", "shape");
        let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
        std::fs::write(d.join("config.json"), cfg).unwrap();
        assert!(msg(&d).contains("tensor `model.layers.0.mlp.gate_proj.weight` has shape [128, 64], expected [96, 64]"), "{}", msg(&d));
        // An unsupported dtype is named.
        let d = copy_fixture("llama-gqa", "dtype");
        let raw = vec![0u8; 64 * 4];
        let view = safetensors::tensor::TensorView::new(Dtype::I32, vec![64], &raw).unwrap();
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut all: Vec<(String, safetensors::tensor::TensorView)> =
            st.tensors().into_iter().filter(|(n, _)| n != "model.norm.weight").collect();
        all.push(("model.norm.weight".into(), view));
        std::fs::write(d.join("model.safetensors"), safetensors::serialize(all, None).unwrap()).unwrap();
        assert!(msg(&d).contains("tensor `model.norm.weight` has dtype I32; supported: F32, F16, BF16"), "{}", msg(&d));
        // A non-finite weight is named with its tensor.
        let d = copy_fixture("llama-gqa", "nan");
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let norm = st.tensor("model.norm.weight").unwrap();
        let mut vals = crate::util::f32s_from_le(norm.data());
        vals[5] = f32::NAN;
        let raw: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(norm.dtype(), norm.shape().to_vec(), &raw).unwrap();
        let mut all: Vec<(String, safetensors::tensor::TensorView)> =
            st.tensors().into_iter().filter(|(n, _)| n != "model.norm.weight").collect();
        all.push(("model.norm.weight".into(), view));
        std::fs::write(d.join("model.safetensors"), safetensors::serialize(all, None).unwrap()).unwrap();
        assert!(msg(&d).contains("tensor `model.norm.weight` holds a non-finite value (NaN) at flat index 5"), "{}", msg(&d));
        // No weights at all.
        let d = copy_fixture("llama-gqa", "noweights");
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        assert!(msg(&d).contains("no model.safetensors or model.safetensors.index.json"), "{}", msg(&d));
    }
}
