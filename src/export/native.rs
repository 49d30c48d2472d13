//! The student as safetensors with Hugging Face Llama tensor names and `[out, in]` layout,
//! beside a `config.json` naming the transformers architecture that computes this model
//! (Llama, Qwen2 for q/k/v-only biases, Mistral for a window on every layer; see
//! [`hf_architecture`]), a `generation_config.json` and the `tokenizer.json`:
//! - `f32`: plain f32 weights.
//! - `int8`: each matrix as int8 plus a `<name>_scale` f32 vector (one scale per output channel);
//!   RMSNorm weights stay f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};

use super::ExportFormat;
use crate::error::{Error, Result};
use crate::model::decoder::Mixer;
use crate::model::{Decoder, DecoderConfig};
use crate::quant::int8::{linear_out_in, quantize_rows};
use crate::util::write_json_atomic;

enum Weight {
    /// Row-major `[rows, cols]`, output channels as rows.
    Matrix(Vec<f32>, usize, usize),
    Vector(Vec<f32>),
    /// A matrix that stays f32 in every format.
    Dense(Vec<f32>, usize, usize),
}

fn vec_of(t: burn::tensor::Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 weights")
}

fn named_weights(m: &Decoder) -> Vec<(String, Weight)> {
    let mut out = Vec::new();
    let e = m.embed.weight.val();
    let [v, d] = e.dims();
    out.push((
        "model.embed_tokens.weight".into(),
        Weight::Matrix(e.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), v, d),
    ));
    for (i, b) in m.blocks.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), Weight::Vector(vec_of(b.mixer_norm.gamma.val()))));
        out.push((format!("{p}.post_attention_layernorm.weight"), Weight::Vector(vec_of(b.mlp_norm.gamma.val()))));
        for (name, l) in b.linears() {
            let (w, r, c) = linear_out_in(l);
            out.push((format!("{p}.{name}.weight"), Weight::Matrix(w, r, c)));
            if let Some(bias) = &l.bias {
                out.push((format!("{p}.{name}.bias"), Weight::Vector(vec_of(bias.val()))));
            }
        }
        if let Mixer::Mamba(m) = &b.mixer {
            // Small per-channel parameters stay f32 (as the norms): quantizing them saves
            // nothing and the SSM dynamics are sensitive to them.
            for (name, t) in [
                ("mixer.conv1d.bias", m.conv_b.val()),
                ("mixer.dt_bias", m.dt_bias.val()),
                ("mixer.A_log", m.a_log.val()),
                ("mixer.D", m.d.val()),
                ("mixer.norm.weight", m.norm_w.val()),
            ] {
                out.push((format!("{p}.{name}"), Weight::Vector(vec_of(t))));
            }
            let cw = m.conv_w.val();
            let [ch, k] = cw.dims();
            out.push((
                format!("{p}.mixer.conv1d.weight"),
                Weight::Dense(cw.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), ch, k),
            ));
        }
    }
    out.push(("model.norm.weight".into(), Weight::Vector(vec_of(m.norm.gamma.val()))));
    if let Some(h) = &m.lm_head {
        let (w, r, c) = linear_out_in(h);
        out.push(("lm_head.weight".into(), Weight::Matrix(w, r, c)));
    }
    out
}

/// The transformers architecture that computes exactly our attention, as
/// `(architectures, model_type, extra config.json keys)`, or why none does. Llama's
/// `attention_bias` biases q, k, v AND o_proj and Llama ignores `sliding_window`; Qwen2 always
/// biases q, k, v (never o_proj) and slides on layers >= max_window_layers when
/// use_sliding_window; Mistral has no biases and slides on every layer.
pub fn hf_architecture(c: &DecoderConfig) -> Result<(&'static str, &'static str, serde_json::Value)> {
    let s = &c.shape;
    let n = s.n_layers;
    let refuse = |why: &str| {
        Err(Error::input(format!(
            "cannot export this model as a transformers checkpoint: {why} (qkv_bias = {}, o_bias = {}, window = {:?} from layer {})",
            s.qkv_bias, s.o_bias, s.window, s.window_from_layer
        )))
    };
    match (s.qkv_bias, s.o_bias, s.window) {
        (false, true, _) => refuse("no architecture has an o_proj bias without q/k/v biases"),
        (true, true, Some(_)) => refuse("Llama has no sliding window"),
        (true, true, None) | (false, false, None) => {
            Ok(("LlamaForCausalLM", "llama", serde_json::json!({"attention_bias": s.qkv_bias})))
        }
        (false, false, Some(w)) if s.window_from_layer == 0 => {
            Ok(("MistralForCausalLM", "mistral", serde_json::json!({"sliding_window": w})))
        }
        (false, false, Some(_)) => refuse("a window on some layers only is Qwen2's, which has q/k/v biases"),
        (true, false, window) => {
            let from = if window.is_some() { s.window_from_layer.min(n) } else { n };
            let types: Vec<&str> =
                (0..n).map(|i| if i >= from { "sliding_attention" } else { "full_attention" }).collect();
            Ok((
                "Qwen2ForCausalLM",
                "qwen2",
                serde_json::json!({
                    "use_sliding_window": window.is_some(), "sliding_window": window,
                    "max_window_layers": from, "layer_types": types,
                }),
            ))
        }
    }
}

/// Write `dir/model.<format>.safetensors`; returns its path and size in bytes.
pub fn export(model: &Decoder, format: ExportFormat, dir: &Path, tokenizer_json: &Path) -> Result<(PathBuf, u64)> {
    let int8 = match format {
        ExportFormat::Int8 => true,
        ExportFormat::F32 => false,
        other => unreachable!("{other:?} is not a safetensors format"),
    };
    let c = &model.config;
    let hybrid = c.shape.layer_pattern.contains('M');
    // Refused before anything is written.
    let arch = if hybrid { None } else { Some(hf_architecture(c)?) };
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, w) in named_weights(model) {
        match (w, int8) {
            (Weight::Vector(v), _) => buffers.push((name, Dtype::F32, vec![v.len()], crate::util::f32s_to_le(&v))),
            (Weight::Dense(w, r, c), _) => buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w))),
            (Weight::Matrix(w, r, c), false) => {
                buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w)))
            }
            (Weight::Matrix(w, r, c), true) => {
                let (q, s) = quantize_rows(&w, r, c);
                buffers.push((format!("{name}_scale"), Dtype::F32, vec![r], crate::util::f32s_to_le(&s)));
                buffers.push((name, Dtype::I8, vec![r, c], q.into_iter().map(|x| x as u8).collect()));
            }
        }
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, dt, shape, b)| (n.clone(), TensorView::new(*dt, shape.clone(), b).expect("consistent shape")))
        .collect();
    let fmt = if int8 { "int8" } else { "f32" };
    // The f32 file under the name transformers' `from_pretrained` looks for.
    let path = match int8 {
        true => dir.join(format!("model.{fmt}.safetensors")),
        false => dir.join("model.safetensors"),
    };
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "distill.quantization".to_string(),
            match int8 {
                true => "int8 symmetric per-output-channel; w = q * <name>_scale[row]".to_string(),
                false => "none".to_string(),
            },
        ),
    ]);
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    let bytes = crate::util::canonical_safetensors(bytes);
    crate::util::write_atomic(&path, &bytes)?;
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.shape.d_model, "intermediate_size": c.shape.d_ff,
        "num_hidden_layers": c.shape.n_layers, "num_attention_heads": c.shape.n_heads,
        "num_key_value_heads": c.shape.n_kv_heads, "head_dim": c.head_dim(),
        "max_position_embeddings": c.shape.max_seq_len, "rope_theta": c.shape.rope_theta,
        "rms_norm_eps": c.shape.norm_eps, "tie_word_embeddings": c.shape.tie_embeddings,
        "hidden_act": "silu", "torch_dtype": "float32",
    });
    if let Some(rs) = &c.shape.rope_scaling {
        config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor, "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings});
    }
    match arch {
        Some((architecture, model_type, extra)) => {
            config["architectures"] = serde_json::json!([architecture]);
            config["model_type"] = serde_json::json!(model_type);
            for (k, v) in extra.as_object().expect("an object") {
                config[k.as_str()] = v.clone();
            }
        }
        None => {
            // No Hugging Face architecture mixes Llama attention and Mamba-2 layers this way:
            // say so instead of claiming to be Llama; the attention keys are ours.
            config["architectures"] = serde_json::json!(["DistillHybrid"]);
            config["model_type"] = serde_json::json!("distill_hybrid");
            config["layer_pattern"] = serde_json::json!(c.shape.layer_pattern);
            config["mamba"] = serde_json::to_value(&c.shape.mamba).expect("serializable");
            config["qkv_bias"] = serde_json::json!(c.shape.qkv_bias);
            config["o_bias"] = serde_json::json!(c.shape.o_bias);
            config["window"] = serde_json::json!(c.shape.window);
            config["window_from_layer"] = serde_json::json!(c.shape.window_from_layer);
        }
    }
    // The special tokens as our tokenizer finds them, so that transformers' `generate` starts
    // and stops where `distill generate` does.
    let tok = crate::data::tokenizer::Tokenizer::load(tokenizer_json)?;
    let bos = tok.bos_id.unwrap_or(tok.eos_id);
    config["bos_token_id"] = serde_json::json!(bos);
    config["eos_token_id"] = serde_json::json!(tok.eos_id);
    write_json_atomic(&dir.join("config.json"), &config)?;
    write_json_atomic(
        &dir.join("generation_config.json"),
        &serde_json::json!({"bos_token_id": bos, "eos_token_id": tok.eos_id, "pad_token_id": tok.eos_id}),
    )?;
    crate::util::copy_atomic(tokenizer_json, &dir.join("tokenizer.json"))?;
    Ok((path, bytes.len() as u64))
}

/// A tensor's values and shape.
pub type Matrix = (Vec<f32>, Vec<usize>);

/// Read an int8 export back into f32 `[out, in]` matrices by name (for tests and tools).
pub fn read_int8(path: &Path) -> Result<HashMap<String, Matrix>> {
    let bytes = std::fs::read(path).map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::input(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if name.ends_with("_scale") {
            continue;
        }
        let shape = view.shape().to_vec();
        let bad = |msg: String| Error::input(format!("{}: tensor `{name}`{msg}", path.display()));
        let data = match view.dtype() {
            Dtype::F32 => crate::util::f32s_from_le(view.data()),
            Dtype::I8 => {
                // Checked, not trusted: a crafted or damaged file must not index out of bounds.
                let &[rows, cols] = shape.as_slice() else {
                    return Err(bad(format!(" is int8 with shape {shape:?}: expected a matrix [rows, cols]")));
                };
                let sname = format!("{name}_scale");
                let s = st.tensor(&sname).map_err(|e| bad(format!(" is int8 but `{sname}` cannot be read: {e}")))?;
                if s.dtype() != Dtype::F32 {
                    return Err(bad(format!(": `{sname}` has dtype {:?}, expected F32", s.dtype())));
                }
                if s.shape() != [rows] {
                    return Err(bad(format!(
                        ": `{sname}` has shape {:?}, expected [{rows}] (one scale per row)",
                        s.shape()
                    )));
                }
                let scales: Vec<f32> = crate::util::f32s_from_le(s.data());
                let q: Vec<i8> = view.data().iter().map(|b| *b as i8).collect();
                crate::quant::int8::dequantize_rows(&q, &scales, cols)
            }
            other => return Err(bad(format!(": unexpected dtype {other:?}"))),
        };
        out.insert(name, (data, shape));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecoderConfig;
    use crate::model::ModelShape;
    use burn::tensor::Device;

    fn tiny() -> DecoderConfig {
        DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(16, 3, 4, 2, 32) }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("distill-export-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tokenizer() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa/tokenizer.json")
    }

    /// config.json as written for `c`, and what our Hugging Face reader (tested against
    /// transformers) makes of it.
    fn exported(c: &DecoderConfig, tag: &str) -> Result<serde_json::Value> {
        let d = tmp(tag);
        export(&c.init(1, &Device::flex()), ExportFormat::F32, &d, &tokenizer())?;
        let v: serde_json::Value = crate::util::read_json(&d.join("config.json")).unwrap();
        let back = serde_json::from_value::<crate::teacher::hf::HfConfig>(v.clone())
            .unwrap()
            .into_config(&d.join("config.json"))
            .unwrap();
        assert_eq!(back.shape, c.shape, "{tag}: transformers would read another model: {v:#}");
        Ok(v)
    }

    /// The architecture written is one that transformers runs as the model we computed: no
    /// `attention_bias` under Llama for q/k/v-only biases (Llama would expect an o_proj bias),
    /// no `sliding_window` under Llama (which ignores it).
    #[test]
    fn config_json_names_an_architecture_that_computes_our_model() {
        let arch = |v: &serde_json::Value| {
            (v["architectures"][0].as_str().unwrap().to_string(), v["model_type"].as_str().unwrap().to_string())
        };
        let v = exported(&tiny(), "plain").unwrap();
        assert_eq!(arch(&v), ("LlamaForCausalLM".into(), "llama".into()));
        assert_eq!(v["attention_bias"], false);
        assert!(v.get("sliding_window").is_none());
        // q/k/v bias only: Qwen2, without a window.
        let mut c = tiny();
        c.shape.qkv_bias = true;
        let v = exported(&c, "qkv").unwrap();
        assert_eq!(arch(&v), ("Qwen2ForCausalLM".into(), "qwen2".into()));
        assert!(v.get("attention_bias").is_none(), "{v:#}");
        assert_eq!(v["use_sliding_window"], false);
        // A window on every layer without biases: Mistral.
        let mut c = tiny();
        c.shape.window = Some(8);
        let v = exported(&c, "mistral").unwrap();
        assert_eq!(arch(&v), ("MistralForCausalLM".into(), "mistral".into()));
        assert_eq!(v["sliding_window"], 8);
        // A window and q/k/v biases: Qwen2 with the window on, on every layer.
        let mut c = tiny();
        c.shape.window = Some(8);
        c.shape.qkv_bias = true;
        let v = exported(&c, "qwen-window").unwrap();
        assert_eq!(arch(&v), ("Qwen2ForCausalLM".into(), "qwen2".into()));
        assert_eq!(
            (&v["use_sliding_window"], &v["sliding_window"], &v["max_window_layers"]),
            (&serde_json::json!(true), &serde_json::json!(8), &serde_json::json!(0))
        );
        assert_eq!(
            v["layer_types"],
            serde_json::json!(["sliding_attention", "sliding_attention", "sliding_attention"])
        );
    }

    /// Each transformers fixture (Llama GQA, Llama with q/k/v/o biases, Llama-3 RoPE scaling
    /// with MQA, Qwen2 with tied embeddings), loaded, exported as f32 and loaded back from the
    /// export, gives transformers' own logits for it: the export is a checkpoint transformers
    /// computes as we do.
    #[test]
    fn f32_export_reloads_as_transformers_logits() {
        let dev = Device::flex();
        for name in ["llama-gqa", "llama-bias", "llama-mqa-rope3", "qwen2-tied"] {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name);
            let (model, _) = crate::teacher::hf::load(&src, &dev, burn::tensor::DType::F32).unwrap();
            let d = tmp(&format!("hf-{name}"));
            export(&model, ExportFormat::F32, &d, &src.join("tokenizer.json")).unwrap();
            let (back, _) = crate::teacher::hf::load(&d, &dev, burn::tensor::DType::F32).unwrap();
            let bytes = std::fs::read(src.join("reference.safetensors")).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let ids: Vec<i64> = st
                .tensor("ids")
                .unwrap()
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let want = crate::util::f32s_from_le(st.tensor("logits_f32").unwrap().data());
            let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(ids.clone(), [1, ids.len()]),
                &dev,
            );
            let got: Vec<f32> = back.forward(input).into_data().iter::<f32>().collect();
            assert_eq!(got.len(), want.len(), "{name}");
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // As the loader's own parity test: f32 summation order only.
            assert!(err < 2e-5, "{name}: max |logit - transformers| = {err}");
            let g: serde_json::Value = crate::util::read_json(&d.join("generation_config.json")).unwrap();
            assert!(g["eos_token_id"].is_u64(), "{name}: {g}");
        }
    }

    /// The same weights give the same bytes, every time (the header's metadata map used to
    /// come out in `HashMap` order), and the file still reads back.
    #[test]
    fn exports_are_byte_identical_from_run_to_run() {
        let model = tiny().init(1, &Device::flex());
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let d = tmp(&format!("same-{i}"));
                let (path, _) = export(&model, ExportFormat::Int8, &d, &tokenizer()).unwrap();
                assert_eq!(read_int8(&path).unwrap().len(), read_int8(&path).unwrap().len());
                std::fs::read(path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]), "exports of one model differ");
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
    }

    /// An export whose tokenizer.json replaces the old file rather than overwriting it.
    #[test]
    fn tokenizer_json_is_written_atomically() {
        let d = tmp("atomic");
        let other = d.join("other");
        std::fs::write(&other, b"old tokenizer").unwrap();
        std::fs::hard_link(&other, d.join("tokenizer.json")).unwrap();
        export(&tiny().init(1, &Device::flex()), ExportFormat::Int8, &d, &tokenizer()).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"old tokenizer");
        assert_eq!(std::fs::read(d.join("tokenizer.json")).unwrap(), std::fs::read(tokenizer()).unwrap());
    }

    /// Crafted int8 files: each problem is an input error naming the file, the tensor and what
    /// was expected (today's reader indexed shapes and scales blindly and panicked).
    #[test]
    fn read_int8_checks_shapes() {
        let d = tmp("int8");
        let case = |tag: &str, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>| -> String {
            let p = d.join(format!("{tag}.safetensors"));
            let views: Vec<(String, TensorView)> = tensors
                .iter()
                .map(|(n, dt, s, b)| (n.to_string(), TensorView::new(*dt, s.clone(), b).unwrap()))
                .collect();
            std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
            let e = read_int8(&p).err().unwrap_or_else(|| panic!("{tag}: expected an error"));
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(msg.contains(&format!("{tag}.safetensors")), "{msg}");
            msg
        };
        let f = |v: &[f32]| crate::util::f32s_to_le(v);
        let msg =
            case("vector", vec![("w", Dtype::I8, vec![6], vec![1; 6]), ("w_scale", Dtype::F32, vec![6], f(&[1.0; 6]))]);
        assert!(msg.contains("`w`") && msg.contains("expected a matrix"), "{msg}");
        let msg =
            case("scales", vec![("w", Dtype::I8, vec![2, 3], vec![1; 6]), ("w_scale", Dtype::F32, vec![1], f(&[1.0]))]);
        assert!(msg.contains("`w_scale` has shape [1], expected [2]"), "{msg}");
        let msg = case(
            "scaledtype",
            vec![("w", Dtype::I8, vec![2, 3], vec![1; 6]), ("w_scale", Dtype::F16, vec![2], vec![0; 4])],
        );
        assert!(msg.contains("`w_scale` has dtype F16, expected F32"), "{msg}");
        let msg = case("noscale", vec![("w", Dtype::I8, vec![2, 3], vec![1; 6])]);
        assert!(msg.contains("`w_scale`"), "{msg}");
    }
}
