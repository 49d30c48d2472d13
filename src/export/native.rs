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
use crate::model::{Decoder, ModelShape};
use crate::quant::fake_quant::{Plan, Scheme};
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
            let name = mixtral_name(&name).unwrap_or(name);
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

/// Mixtral's name of a mixture's tensor (our `mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`
/// are its `block_sparse_moe.gate`, `block_sparse_moe.experts.E.{w1,w3,w2}`), without the
/// `.weight`; `None` for every other name.
pub fn mixtral_name(ours: &str) -> Option<String> {
    if ours == "mlp.gate" {
        return Some("block_sparse_moe.gate".into());
    }
    let (e, proj) = ours.strip_prefix("mlp.experts.")?.split_once('.')?;
    let w = match proj {
        "gate_proj" => "w1",
        "down_proj" => "w2",
        "up_proj" => "w3",
        _ => return None,
    };
    Some(format!("block_sparse_moe.experts.{e}.{w}"))
}

/// The transformers architecture that computes exactly our attention, as
/// `(architectures, model_type, extra config.json keys)`, or why none does. Llama's
/// `attention_bias` biases q, k, v AND o_proj and Llama ignores `sliding_window`; Qwen2 always
/// biases q, k, v (never o_proj) and slides on layers >= max_window_layers when
/// use_sliding_window; Mistral has no biases and slides on every layer.
pub fn hf_architecture(s: &ModelShape) -> Result<(&'static str, &'static str, serde_json::Value)> {
    let n = s.n_layers;
    let refuse = |why: &str| {
        Err(Error::input(format!(
            "cannot export this model as a transformers checkpoint: {why} (qkv_bias = {}, o_bias = {}, window = {:?} from layer {})",
            s.qkv_bias, s.o_bias, s.window, s.window_from_layer
        )))
    };
    if let Some(m) = &s.moe {
        // Mixtral: every layer's FFN a softmax top-k mixture with renormalized gates, Llama
        // attention without biases, Mistral's window on every layer if any.
        return match (m.every, s.qkv_bias || s.o_bias, s.window_from_layer) {
            (1, false, 0) => Ok((
                "MixtralForCausalLM",
                "mixtral",
                serde_json::json!({
                    "num_local_experts": m.experts, "num_experts_per_tok": m.active,
                    "intermediate_size": m.d_ff_expert, "router_aux_loss_coef": m.router_aux_loss,
                    "sliding_window": s.window, "output_router_logits": false,
                }),
            )),
            (1, false, _) => refuse("Mixtral's window is on every layer or none"),
            (1, true, _) => refuse("Mixtral has no attention biases"),
            (every, ..) => {
                refuse(&format!("its experts are in one layer in every {every}; Mixtral has them in every layer"))
            }
        };
    }
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

/// `[rows, cols]` as int4 groups along each row: the nibbles as `[rows, cols / 2]` bytes and
/// the scales as `[rows, cols / group]`: ggml's Q4_0 blocks (f16 scales) unless `scheme` is
/// int4-g<N> (f32 scales); the packing is the same ([`crate::quant::int4`]).
fn int4_rows(w: &[f32], cols: usize, scheme: Scheme, name: &str) -> Result<(Vec<u8>, Dtype, Vec<u8>, usize)> {
    use crate::quant::ggml::quantize_q4_0;
    let group = match scheme {
        Scheme::Int4 { group } => group,
        _ => crate::quant::ggml::QK,
    };
    if !cols.is_multiple_of(group) {
        return Err(Error::input(format!(
            "{name}: int4 quantizes groups of {group} values along each row, but rows have {cols} values"
        )));
    }
    crate::quant::check_finite(w, cols, name)?;
    let (mut q, mut d) = (Vec::with_capacity(w.len() / 2), Vec::new());
    for g in w.chunks_exact(group) {
        match scheme {
            Scheme::Int4 { .. } => {
                let (scale, nibbles) = crate::quant::int4::quantize_group(g);
                q.extend(nibbles);
                d.extend(scale.to_le_bytes());
            }
            _ => {
                let blk = quantize_q4_0(g.try_into().expect("whole blocks"));
                q.extend(blk.qs);
                d.extend(blk.d.to_le_bytes());
            }
        }
    }
    let dtype = if matches!(scheme, Scheme::Int4 { .. }) { Dtype::F32 } else { Dtype::F16 };
    Ok((q, dtype, d, group))
}

/// Write `dir/model.<format>.safetensors` (`model.safetensors` for `hf`); returns its path and
/// size in bytes. For int4, `plan` says whether the embedding table and LM head are int4 too.
pub fn export(
    model: &Decoder,
    format: ExportFormat,
    plan: &Plan,
    dir: &Path,
    tokenizer_json: &Path,
) -> Result<(PathBuf, u64)> {
    let fmt = match format {
        ExportFormat::Int8 => "int8",
        ExportFormat::Int4 => "int4",
        ExportFormat::F32 => "f32",
        other => unreachable!("{other:?} is not a safetensors format"),
    };
    let int4_table = |name: &str| match name {
        "model.embed_tokens.weight" => plan.quantizes_embedding(model.lm_head.is_none()),
        "lm_head.weight" => plan.lm_head,
        _ => true,
    };
    let c = &model.config;
    let hybrid = c.shape.layer_pattern.contains('M');
    // Refused before anything is written.
    let arch = if hybrid { None } else { Some(hf_architecture(&c.shape)?) };
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, w) in named_weights(model) {
        match (w, format) {
            (Weight::Vector(v), _) => buffers.push((name, Dtype::F32, vec![v.len()], crate::util::f32s_to_le(&v))),
            (Weight::Dense(w, r, c), _) => buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w))),
            (Weight::Matrix(w, r, c), ExportFormat::Int8) => {
                let (q, s) = quantize_rows(&w, r, c);
                buffers.push((format!("{name}_scale"), Dtype::F32, vec![r], crate::util::f32s_to_le(&s)));
                buffers.push((name, Dtype::I8, vec![r, c], q.into_iter().map(|x| x as u8).collect()));
            }
            (Weight::Matrix(w, r, c), ExportFormat::Int4) if int4_table(&name) => {
                let (q, dtype, d, group) = int4_rows(&w, c, plan.scheme, &name)?;
                buffers.push((format!("{name}_scale"), dtype, vec![r, c / group], d));
                buffers.push((name, Dtype::U8, vec![r, c / 2], q));
            }
            (Weight::Matrix(w, r, c), _) => buffers.push((name, Dtype::F32, vec![r, c], crate::util::f32s_to_le(&w))),
        }
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, dt, shape, b)| (n.clone(), TensorView::new(*dt, shape.clone(), b).expect("consistent shape")))
        .collect();
    // The f32 file under the name transformers' `from_pretrained` looks for.
    let path = match format {
        ExportFormat::F32 => dir.join("model.safetensors"),
        _ => dir.join(format!("model.{fmt}.safetensors")),
    };
    let quantization = match format {
        ExportFormat::Int8 => "int8 symmetric per-output-channel; w = q * <name>_scale[row]",
        ExportFormat::Int4 => INT4_LAYOUT,
        _ => "none",
    };
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("distill.quantization".to_string(), quantization.to_string()),
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

/// How an int4 file stores a matrix (its safetensors metadata says so).
pub const INT4_LAYOUT: &str = "int4: groups of G values along each row (G = cols / scale columns); \
    <name> u8 [rows, cols/2]: in each group's G/2 bytes, value j in the low nibble of byte j and value \
    j+G/2 in the high nibble; <name>_scale [rows, cols/G], f16 (ggml Q4_0, G = 32) or f32 (int4-g<G>); \
    w = (nibble - 8) * scale";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecoderConfig;
    use crate::model::ModelShape;
    use burn::tensor::Device;

    const NO_PLAN: Plan = Plan::linears(crate::quant::fake_quant::Scheme::Q4_0);

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
        export(&c.init(1, &Device::flex()), ExportFormat::F32, &NO_PLAN, &d, &tokenizer())?;
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
            export(&model, ExportFormat::F32, &NO_PLAN, &d, &src.join("tokenizer.json")).unwrap();
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

    /// A mixture of experts in every layer exports as a Mixtral folder (its config keys, its
    /// tensor names) and reads back, through the Hugging Face loader's Mixtral names, as the
    /// same model; experts in every other layer, which Mixtral cannot hold, are refused.
    #[test]
    fn moe_exports_as_mixtral_and_reloads() {
        let dev = Device::flex();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa");
        let (dense, _) = crate::teacher::hf::load(&src, &dev, burn::tensor::DType::F32).unwrap();
        let mut s = crate::model::config::MoeShape {
            experts: 3,
            active: 2,
            d_ff_expert: dense.config.shape.d_ff,
            every: 1,
            router_aux_loss: 0.02,
            upcycle_noise: 0.05,
        };
        let model = crate::model::moe::upcycle_decoder(dense, &s, 7);
        let d = tmp("mixtral");
        export(&model, ExportFormat::F32, &NO_PLAN, &d, &src.join("tokenizer.json")).unwrap();
        let c: serde_json::Value = crate::util::read_json(&d.join("config.json")).unwrap();
        assert_eq!(
            (c["architectures"][0].as_str(), c["num_local_experts"].as_u64(), c["num_experts_per_tok"].as_u64()),
            (Some("MixtralForCausalLM"), Some(3), Some(2))
        );
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.tensor("model.layers.0.block_sparse_moe.experts.2.w3.weight").is_ok());
        assert!(st.tensor("model.layers.0.block_sparse_moe.gate.weight").is_ok());
        let (back, _) = crate::teacher::hf::load(&d, &dev, burn::tensor::DType::F32).unwrap();
        let key = |m: &Decoder| {
            m.config.shape.moe.as_ref().map(|m| (m.experts, m.active, m.d_ff_expert, m.every, m.router_aux_loss))
        };
        assert_eq!(key(&back), key(&model));
        let ids = crate::model::token_tensor(&[5, 9, 77, 100, 3, 3, 41], &dev);
        let err: f32 = (back.forward(ids.clone()) - model.forward(ids)).abs().max().into_scalar();
        assert!(err < 1e-5, "{err}");
        // int8 through the same names (and their `_scale`s): near the f32 model, not equal.
        let d8 = tmp("mixtral-int8");
        export(&model, ExportFormat::Int8, &NO_PLAN, &d8, &src.join("tokenizer.json")).unwrap();
        let (back8, _) = crate::teacher::hf::load(&d8, &dev, burn::tensor::DType::F32).unwrap();
        let ids = crate::model::token_tensor(&[5, 9, 77, 100, 3, 3, 41], &dev);
        let err8: f32 = (back8.forward(ids.clone()) - model.forward(ids)).abs().max().into_scalar();
        assert!(err8 > 0.0 && err8 < 0.05, "{err8}");
        s.every = 2;
        let half = crate::model::moe::upcycle_decoder(
            crate::teacher::hf::load(&src, &dev, burn::tensor::DType::F32).unwrap().0,
            &s,
            7,
        );
        let e =
            export(&half, ExportFormat::F32, &NO_PLAN, &tmp("mixtral-half"), &src.join("tokenizer.json")).unwrap_err();
        assert!(e.to_string().contains("one layer in every 2") && e.to_string().contains("Mixtral"), "{e}");
    }

    /// The same weights give the same bytes, every time (the header's metadata map used to
    /// come out in `HashMap` order).
    #[test]
    fn exports_are_byte_identical_from_run_to_run() {
        let model = tiny().init(1, &Device::flex());
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let d = tmp(&format!("same-{i}"));
                let (path, _) = export(&model, ExportFormat::Int8, &NO_PLAN, &d, &tokenizer()).unwrap();
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
        export(&tiny().init(1, &Device::flex()), ExportFormat::Int8, &NO_PLAN, &d, &tokenizer()).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"old tokenizer");
        assert_eq!(std::fs::read(d.join("tokenizer.json")).unwrap(), std::fs::read(tokenizer()).unwrap());
    }

    /// int8 and int4 exports load back (through the Hugging Face reader, as `distill logits
    /// --model <export dir>` does) as exactly the quantized model: int8 as `fake_quant_model`,
    /// int4 as the Q4_0 round trip of the plan (bit for bit, the embedding table included when
    /// the plan says so).
    #[test]
    fn int8_and_int4_exports_load_back_as_the_quantized_model() {
        use crate::quant::fake_quant::round_trip_model;
        let dev = Device::flex();
        let model = DecoderConfig { vocab_size: 1024, shape: ModelShape::for_tests(64, 2, 4, 2, 96) }.init(3, &dev);
        let ids = crate::model::token_tensor(&[1, 7, 3, 9, 2, 5, 39], &dev);
        let bits = |m: &Decoder| m.forward(ids.clone()).into_data().iter::<f32>().map(f32::to_bits).collect::<Vec<_>>();
        let back = |tag: &str, format: ExportFormat, plan: &Plan| {
            let d = tmp(tag);
            let (path, size) = export(&model, format, plan, &d, &tokenizer()).unwrap();
            (crate::teacher::hf::load(&d, &dev, burn::tensor::DType::F32).unwrap().0, size, path)
        };
        let (m8, size8, _) = back("int8-back", ExportFormat::Int8, &NO_PLAN);
        let want = crate::quant::int8::fake_quant_model(&model);
        let err: f32 = (m8.forward(ids.clone()) - want.forward(ids.clone())).abs().max().into_scalar();
        assert!(err < 1e-5, "int8: {err}");
        for (emb, scheme, tag) in [
            (false, Scheme::Q4_0, "int4-linears"),
            (true, Scheme::Q4_0, "int4-all"),
            (true, Scheme::Int4 { group: 32 }, "int4-g32"),
        ] {
            let plan = Plan { scheme, embeddings: emb, lm_head: emb, activations: false };
            let (m4, size4, path) = back(tag, ExportFormat::Int4, &plan);
            assert_eq!(bits(&m4), bits(&round_trip_model(&model, &plan).unwrap()), "{tag}");
            assert!(path.ends_with("model.int4.safetensors"));
            if tag == "int4-all" {
                // 4.5 bits per weight against int8's 8 + a scale per row.
                assert!((size4 as f64) < 0.62 * size8 as f64, "{size4} vs {size8}");
            }
        }
    }

    /// Crafted quantized files: each problem is an input error naming the file, the tensor and
    /// what was expected, never an out-of-bounds index.
    #[test]
    fn quantized_tensors_are_checked() {
        use crate::model::init::WeightSource;
        let case = |tag: &str, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>| -> String {
            let d = tmp(&format!("crafted-{tag}"));
            let p = d.join("model.int8.safetensors");
            let views: Vec<(String, TensorView)> = tensors
                .iter()
                .map(|(n, dt, s, b)| (n.to_string(), TensorView::new(*dt, s.clone(), b).unwrap()))
                .collect();
            std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
            let w = crate::teacher::hf::HfWeights::open(&d).unwrap();
            let e = w.get("w").err().unwrap_or_else(|| panic!("{tag}: expected an error"));
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(msg.contains("model.int8.safetensors") && msg.contains("`w`"), "{msg}");
            msg
        };
        let f = |v: &[f32]| crate::util::f32s_to_le(v);
        let msg =
            case("vector", vec![("w", Dtype::I8, vec![6], vec![1; 6]), ("w_scale", Dtype::F32, vec![6], f(&[1.0; 6]))]);
        assert!(msg.contains("expected a matrix"), "{msg}");
        let msg =
            case("scales", vec![("w", Dtype::I8, vec![2, 3], vec![1; 6]), ("w_scale", Dtype::F32, vec![1], f(&[1.0]))]);
        assert!(msg.contains("`w_scale` is F32 [1], expected F32 [2]"), "{msg}");
        let msg = case(
            "scaledtype",
            vec![("w", Dtype::I8, vec![2, 3], vec![1; 6]), ("w_scale", Dtype::F16, vec![2], vec![0; 4])],
        );
        assert!(msg.contains("`w_scale` is F16 [2], expected F32 [2]"), "{msg}");
        let msg = case("noscale", vec![("w", Dtype::I8, vec![2, 3], vec![1; 6])]);
        assert!(msg.contains("`w_scale`"), "{msg}");
        // int4: scales that do not cut a row of 32 values into groups of an even size.
        for (tag, shape) in [("int4zero", vec![2, 0]), ("int4three", vec![2, 3]), ("int4rows", vec![3, 1])] {
            let n = shape.iter().product::<usize>() * 2;
            let msg =
                case(tag, vec![("w", Dtype::U8, vec![2, 16], vec![0; 32]), ("w_scale", Dtype::F16, shape, vec![0; n])]);
            assert!(msg.contains("is int4 with 32 values per row") && msg.contains("expected [2, G]"), "{msg}");
        }
        let msg = case(
            "int4dtype",
            vec![("w", Dtype::U8, vec![2, 16], vec![0; 32]), ("w_scale", Dtype::BF16, vec![2, 1], vec![0; 4])],
        );
        assert!(msg.contains("`w_scale` has dtype BF16, expected F16 or F32"), "{msg}");
    }
}
