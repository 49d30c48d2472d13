//! The student as safetensors with Hugging Face Llama tensor names and `[out, in]` layout,
//! beside a Llama-style `config.json` and the `tokenizer.json`:
//! - `f32`: plain f32 weights.
//! - `int8`: each matrix as int8 plus a `<name>_scale` f32 vector (one scale per output channel);
//!   RMSNorm weights stay f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};

use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::model::decoder::Mixer;
use crate::quant::int8::{linear_out_in, quantize_rows};
use crate::recipe::ExportFormat;
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
    out.push(("model.embed_tokens.weight".into(), Weight::Matrix(e.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), v, d)));
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
            for (name, t) in [("mixer.conv1d.bias", m.conv_b.val()), ("mixer.dt_bias", m.dt_bias.val()),
                ("mixer.A_log", m.a_log.val()), ("mixer.D", m.d.val()), ("mixer.norm.weight", m.norm_w.val())] {
                out.push((format!("{p}.{name}"), Weight::Vector(vec_of(t))));
            }
            let cw = m.conv_w.val();
            let [ch, k] = cw.dims();
            out.push((format!("{p}.mixer.conv1d.weight"), Weight::Dense(cw.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), ch, k)));
        }
    }
    out.push(("model.norm.weight".into(), Weight::Vector(vec_of(m.norm.gamma.val()))));
    if let Some(h) = &m.lm_head {
        let (w, r, c) = linear_out_in(h);
        out.push(("lm_head.weight".into(), Weight::Matrix(w, r, c)));
    }
    out
}


/// Write `dir/model.<format>.safetensors`; returns its path and size in bytes.
pub fn export(model: &Decoder, format: ExportFormat, dir: &Path, tokenizer_json: &Path) -> Result<(PathBuf, u64)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, w) in named_weights(model) {
        match (w, format) {
            (Weight::Vector(v), _) => buffers.push((name, Dtype::F32, vec![v.len()], crate::util::f32s_to_le(&v))),
            (Weight::Dense(w, r, c), _) => buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w))),
            (Weight::Matrix(w, r, c), ExportFormat::F32) => buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w))),
            (Weight::Matrix(w, r, c), ExportFormat::Int8) => {
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
    let fmt = match format {
        ExportFormat::Int8 => "int8",
        ExportFormat::F32 => "f32",
    };
    let path = dir.join(format!("model.{fmt}.safetensors"));
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("distill.quantization".to_string(), match format {
            ExportFormat::Int8 => "int8 symmetric per-output-channel; w = q * <name>_scale[row]".to_string(),
            ExportFormat::F32 => "none".to_string(),
        }),
    ]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    crate::util::write_atomic(&path, &bytes)?;
    let c = &model.config;
    let hybrid = c.shape.layer_pattern.contains('M');
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.shape.d_model, "intermediate_size": c.shape.d_ff,
        "num_hidden_layers": c.shape.n_layers, "num_attention_heads": c.shape.n_heads,
        "num_key_value_heads": c.shape.n_kv_heads, "head_dim": c.head_dim(),
        "max_position_embeddings": c.shape.max_seq_len, "rope_theta": c.shape.rope_theta,
        "rms_norm_eps": c.shape.norm_eps, "tie_word_embeddings": c.shape.tie_embeddings,
        "hidden_act": "silu", "torch_dtype": "float32", "attention_bias": c.shape.qkv_bias,
    });
    if let Some(rs) = &c.shape.rope_scaling {
        config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor, "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings});
    }
    if let Some(w) = c.shape.window {
        config["sliding_window"] = serde_json::json!(w);
    }
    if hybrid {
        // No Hugging Face architecture mixes Llama attention and Mamba-2 layers this way:
        // say so instead of claiming to be Llama.
        config["architectures"] = serde_json::json!(["DistillHybrid"]);
        config["model_type"] = serde_json::json!("distill_hybrid");
        config["layer_pattern"] = serde_json::json!(c.shape.layer_pattern);
        config["mamba"] = serde_json::to_value(&c.shape.mamba).expect("serializable");
    }
    write_json_atomic(&dir.join("config.json"), &config)?;
    std::fs::copy(tokenizer_json, dir.join("tokenizer.json"))
        .map_err(|e| Error::runtime(format!("{}: {e}", tokenizer_json.display())))?;
    Ok((path, bytes.len() as u64))
}

/// Read an int8 export back into f32 `[out, in]` matrices by name (for tests and tools).
pub fn read_int8(path: &Path) -> Result<HashMap<String, (Vec<f32>, Vec<usize>)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::input(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if name.ends_with("_scale") {
            continue;
        }
        let shape = view.shape().to_vec();
        let data = match view.dtype() {
            Dtype::F32 => crate::util::f32s_from_le(view.data()),
            Dtype::I8 => {
                let s = st.tensor(&format!("{name}_scale")).map_err(|e| Error::input(format!("{}: {name}: {e}", path.display())))?;
                let scales: Vec<f32> = crate::util::f32s_from_le(s.data());
                let q: Vec<i8> = view.data().iter().map(|b| *b as i8).collect();
                crate::quant::int8::dequantize_rows(&q, &scales, shape[1])
            }
            other => return Err(Error::input(format!("{}: {name}: unexpected dtype {other:?}", path.display()))),
        };
        out.insert(name, (data, shape));
    }
    Ok(out)
}
