//! Hugging Face Llama / Qwen2 / Mistral checkpoints as frozen teachers: `config.json` mirrored into a
//! serde struct and converted once into our `DecoderConfig`; weights memory-mapped from
//! `model.safetensors` or the shards named by `model.safetensors.index.json` (f32, f16 or
//! bf16, converted once to f32 as each tensor is built); the folder's `tokenizer.json`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::config::{MambaShape, ModelShape, RopeScaling};
use crate::model::init::WeightSource;
use crate::model::{Decoder, DecoderConfig};

pub const SUPPORTED: [&str; 3] = ["llama", "mistral", "qwen2"];

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
            "mistral" => (self.sliding_window, 0),
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
            return Err(Error::input(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.into_iter().enumerate() {
            let file = std::fs::File::open(&f).map_err(|e| Error::input(format!("{}: {e}", f.display())))?;
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

    fn view<'a>(&'a self, name: &str) -> Result<(&'a Path, safetensors::tensor::TensorView<'a>)> {
        self.asked.borrow_mut().insert(name.to_string());
        let &i = self.index.get(name).ok_or_else(|| Error::input(format!("missing tensor `{name}`")))?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).expect("validated at open");
        let view = st.tensor(name).map_err(|e| Error::input(format!("{}: `{name}`: {e}", path.display())))?;
        match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok((path.as_path(), view)),
            other => Err(Error::input(format!(
                "{}: tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16",
                path.display()
            ))),
        }
    }
}

impl WeightSource for HfWeights {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.1.shape().to_vec())
    }

    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (path, view) = self.view(name)?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => crate::util::f32s_from_le(bytes),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => unreachable!("checked by view"),
        };
        // A NaN or infinity in a teacher's weights would surface as a NaN loss much later.
        if let Some(j) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "{}: tensor `{name}` holds a non-finite value ({}) at flat index {j}: the checkpoint is damaged",
                path.display(),
                data[j]
            )));
        }
        Ok((data, view.shape().to_vec()))
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

/// Load a Hugging Face folder: the model (frozen, on `device`, its weights in `dtype`, each
/// converted as it is read) and its tokenizer.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<(Decoder, Tokenizer)> {
    let cfg_path = dir.join("config.json");
    let text = crate::error::read_to_string(&cfg_path)?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", cfg_path.display())))?;
    let config = hf.into_config(&cfg_path)?;
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
mod tests {
    use super::*;
    use burn::tensor::{Int, Tensor, TensorData};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
    }

    fn reference(dir: &Path) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let f = |n: &str| -> Vec<f32> { crate::util::f32s_from_le(st.tensor(n).unwrap().data()) };
        let ids = st
            .tensor("ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (ids, f("logits_f32"), f("logits_native"))
    }

    /// The largest logit error that rounding in `dtype` explains. The fixtures' logits are
    /// below 1 in magnitude (asserted), where one unit in the last place is 2^-8 in bf16 and
    /// 2^-11 in f16: allow two (the two implementations round independently), 7.8e-3 and
    /// 9.8e-4, over measured maxima of 4.2e-3 (bf16) and 5.5e-4 (f16). In f32 the two
    /// implementations differ only in summation order: measured at most 6.7e-6, allowed 2e-5.
    fn tol(dtype: DType) -> f32 {
        match dtype {
            DType::BF16 => 2.0 * 2f32.powi(-8),
            DType::F16 => 2.0 * 2f32.powi(-11),
            _ => 2e-5,
        }
    }

    /// Logits of tiny random models made and run by transformers 5.17 (scripts/make_hf_fixtures.py):
    /// Llama GQA in f32, Llama MQA with Llama-3 RoPE scaling in sharded bf16, Qwen2 with
    /// q/k/v bias and tied embeddings in f16.
    #[test]
    fn logits_match_transformers() {
        let dev = Device::flex();
        for (name, stored) in [("llama-gqa", DType::F32), ("llama-mqa-rope3", DType::BF16), ("qwen2-tied", DType::F16)]
        {
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
            let scale = want_f32.iter().fold(0f32, |m, x| m.max(x.abs()));
            println!(
                "{name} in F32: max abs diff {} vs transformers in f32, {} vs its dtype; max |logit| {scale}",
                err(&want_f32),
                err(&want_native)
            );
            assert!(scale < 1.0, "{name}: the tolerances assume logits below 1, got {scale}");
            assert!(err(&want_f32) < tol(DType::F32), "{name}: {} vs transformers in f32", err(&want_f32));
            // Ours in f32 against transformers in the stored dtype: its rounding alone.
            assert!(err(&want_native) < tol(stored), "{name}: {} vs transformers in its dtype", err(&want_native));
        }
        // Run in the stored precision (what `teacher.dtype` does), against transformers run in it.
        for (name, dtype) in [("llama-mqa-rope3", burn::tensor::DType::BF16), ("qwen2-tied", burn::tensor::DType::F16)]
        {
            let dir = fixture(name);
            // Loaded straight into the half dtype, tensor by tensor: the same model as loading
            // in f32 and casting the whole.
            let model = load(&dir, &dev, dtype).unwrap().0;
            assert_eq!(model.embed.weight.val().dtype(), dtype);
            let (ids, want_f32, want_native) = reference(&dir);
            let t = ids.len();
            let run = |m: &Decoder| -> Vec<f32> {
                m.forward(Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &dev))
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            let got = run(&model);
            assert_eq!(got, run(&load(&dir, &dev, DType::F32).unwrap().0.cast(dtype)), "{name}: direct vs cast");
            let err = |w: &[f32]| got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!(
                "{name} in {dtype:?}: max abs diff {} vs transformers in {dtype:?}, {} vs f32",
                err(&want_native),
                err(&want_f32)
            );
            assert!(
                err(&want_native) < tol(dtype) && err(&want_f32) < tol(dtype),
                "{name} in {dtype:?}: {} / {}",
                err(&want_native),
                err(&want_f32)
            );
        }
        let (m, _) = load(&fixture("qwen2-tied"), &dev, DType::F32).unwrap();
        assert!(m.lm_head.is_none() && m.config.shape.qkv_bias);
        let (m, _) = load(&fixture("llama-mqa-rope3"), &dev, DType::F32).unwrap();
        assert_eq!(m.config.shape.rope_scaling.as_ref().unwrap().factor, 8.0);
        assert_eq!(m.config.shape.rope_theta, 500000.0);
    }

    /// Our model's logits on the fixture's ids against transformers' in f32.
    fn f32_parity(name: &str) -> f32 {
        let dev = Device::flex();
        let dir = fixture(name);
        let (model, _) = load(&dir, &dev, DType::F32).unwrap();
        let (ids, want, _) = reference(&dir);
        let t = ids.len();
        let got: Vec<f32> = model
            .forward(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &dev))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len());
        assert!(want.iter().all(|x| x.abs() < 1.0), "{name}: tol() assumes logits below 1");
        got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    /// Llama `attention_bias = true`: transformers puts a bias on q, k, v and o_proj.
    #[test]
    fn llama_attention_bias_includes_o_proj() {
        let err = f32_parity("llama-bias");
        assert!(err < tol(DType::F32), "llama-bias: {err} vs transformers");
    }

    /// Qwen2 with use_sliding_window and max_window_layers = 1: layer 0 attends fully, layers
    /// 1 and 2 through a 5-token window (transformers' layer_types).
    #[test]
    fn qwen2_window_only_from_max_window_layers() {
        let err = f32_parity("qwen2-window");
        assert!(err < tol(DType::F32), "qwen2-window: {err} vs transformers");
    }

    /// The BOS fixture: a Llama whose tokenizer prepends `<s>` (id 1024); transformers' ids
    /// for the fixed text (BOS first) and its logits on them.
    #[test]
    fn bos_fixture_logits_match_transformers() {
        let dir = fixture("llama-bos");
        let (ids, _, _) = reference(&dir);
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().as_ref().unwrap();
        assert_eq!(meta["bos_id"], "1024");
        assert_eq!(ids[0], 1024, "transformers prepends BOS");
        let tok = Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
        let plain: Vec<i64> = tok.encode(&meta["text"]).unwrap().into_iter().map(i64::from).collect();
        assert_eq!(&ids[1..], &plain[..], "the ids after BOS are the text's");
        let err = f32_parity("llama-bos");
        assert!(err < tol(DType::F32), "llama-bos: {err} vs transformers");
    }

    /// What the Qwen2 / Llama sliding-window keys mean in transformers (5.17 Qwen2Config:
    /// sliding_window only with use_sliding_window; layer i slides iff layer_types[i] says so,
    /// layer_types defaulting to i >= max_window_layers; Llama has no sliding window).
    #[test]
    fn sliding_window_config_follows_transformers() {
        let conv = |extra: &str, arch: &str| -> Result<DecoderConfig> {
            let text = format!(
                r#"{{"model_type": "{arch}", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                "num_hidden_layers": 3, "num_attention_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-6{extra}}}"#
            );
            serde_json::from_str::<HfConfig>(&text).unwrap().into_config(Path::new("config.json"))
        };
        let layer_windows = |c: &DecoderConfig| -> Vec<Option<usize>> {
            let m = c.init(0, &Device::flex());
            m.blocks
                .iter()
                .map(|b| match &b.mixer {
                    crate::model::decoder::Mixer::Attention(a) => a.window,
                    _ => unreachable!(),
                })
                .collect()
        };
        // Off: the window size alone does nothing.
        let c = conv(r#", "use_sliding_window": false, "sliding_window": 4"#, "qwen2").unwrap();
        assert_eq!(layer_windows(&c), [None, None, None]);
        // On, but max_window_layers >= num_hidden_layers: no layer slides (Qwen2-7B's config).
        let c = conv(r#", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 3"#, "qwen2").unwrap();
        assert_eq!(layer_windows(&c), [None, None, None]);
        // Unset max_window_layers defaults to 28 in transformers.
        let c = conv(r#", "use_sliding_window": true, "sliding_window": 4"#, "qwen2").unwrap();
        assert_eq!(layer_windows(&c), [None, None, None]);
        let c = conv(r#", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 0"#, "qwen2").unwrap();
        assert_eq!(layer_windows(&c), [Some(4), Some(4), Some(4)]);
        let c = conv(r#", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 2"#, "qwen2").unwrap();
        assert_eq!(layer_windows(&c), [None, None, Some(4)]);
        // layer_types, when given, decide over max_window_layers.
        let c = conv(
            r#", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 0,
            "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]"#,
            "qwen2",
        )
        .unwrap();
        assert_eq!(layer_windows(&c), [None, Some(4), Some(4)]);
        // ... but slide nowhere without use_sliding_window.
        let c = conv(
            r#", "use_sliding_window": false, "sliding_window": 4,
            "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention"]"#,
            "qwen2",
        )
        .unwrap();
        assert_eq!(layer_windows(&c), [None, None, None]);
        // A pattern other than full layers first, then sliding ones, is refused by name.
        let e = conv(
            r#", "use_sliding_window": true, "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]"#,
            "qwen2",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("config.json: layer_types"), "{e}");
        let e =
            conv(r#", "use_sliding_window": true, "sliding_window": 4, "layer_types": ["full_attention"]"#, "qwen2")
                .unwrap_err();
        assert!(e.to_string().contains("layer_types has 1 entries for 3 layers"), "{e}");
        // Llama has no sliding window: the keys are ignored, as transformers does.
        let c = conv(r#", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 0"#, "llama").unwrap();
        assert_eq!(layer_windows(&c), [None, None, None]);
    }

    /// A tensor in the weight files that the model does not use is an error naming it and
    /// its file, never silently dropped (e.g. an o_proj bias under attention_bias = false).
    #[test]
    fn unused_tensor_is_an_error() {
        let d = copy_fixture("llama-gqa", "unused");
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let raw = vec![0u8; 64 * 4];
        let mut all: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
        all.push((
            "model.layers.1.self_attn.o_proj.bias".into(),
            safetensors::tensor::TensorView::new(Dtype::F32, vec![64], &raw).unwrap(),
        ));
        std::fs::write(d.join("model.safetensors"), safetensors::serialize(all, None).unwrap()).unwrap();
        let e = load(&d, &Device::flex(), DType::F32).err().expect("an unused tensor must fail the load");
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("model.safetensors")
                && msg.contains("tensor `model.layers.1.self_attn.o_proj.bias` is not used"),
            "{msg}"
        );
    }

    /// A config.json whose sizes do not match the weights fails at the first tensor, before
    /// anything of the configured size is allocated (here 2^40 x 64 floats: 256 TiB).
    #[test]
    fn bad_config_fails_before_allocating() {
        let d = copy_fixture("llama-gqa", "huge");
        let cfg = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"vocab_size\": 1024", "\"vocab_size\": 1099511627776");
        std::fs::write(d.join("config.json"), cfg).unwrap();
        let e = load(&d, &Device::flex(), DType::F32).err().expect("a mismatched config must fail the load");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("tensor `model.embed_tokens.weight` has shape [1024, 64], expected [1099511627776, 64]"),
            "{e}"
        );
    }

    #[test]
    fn tokenizer_matches_transformers() {
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_parity.json")).unwrap()).unwrap();
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
        assert!(msg(&d).contains("unsupported model_type \"gemma\"; supported: llama, mistral, qwen2"), "{}", msg(&d));
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
        let cfg = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
        std::fs::write(d.join("config.json"), cfg).unwrap();
        assert!(
            msg(&d).contains("tensor `model.layers.0.mlp.gate_proj.weight` has shape [128, 64], expected [96, 64]"),
            "{}",
            msg(&d)
        );
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
        assert!(
            msg(&d).contains("tensor `model.norm.weight` holds a non-finite value (NaN) at flat index 5"),
            "{}",
            msg(&d)
        );
        // No weights at all.
        let d = copy_fixture("llama-gqa", "noweights");
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        assert!(msg(&d).contains("no model.safetensors or model.safetensors.index.json"), "{}", msg(&d));
    }
}
