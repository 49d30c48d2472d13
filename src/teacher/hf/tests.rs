use super::*;
use burn::tensor::{Int, Tensor, TensorData};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

fn reference(dir: &Path) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f = |n: &str| -> Vec<f32> { crate::util::f32s_from_le(st.tensor(n).unwrap().data()) };
    let ids =
        st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
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
    for (name, stored) in [("llama-gqa", DType::F32), ("llama-mqa-rope3", DType::BF16), ("qwen2-tied", DType::F16)] {
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
    for (name, dtype) in [("llama-mqa-rope3", burn::tensor::DType::BF16), ("qwen2-tied", burn::tensor::DType::F16)] {
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
    let e = conv(r#", "use_sliding_window": true, "sliding_window": 4, "layer_types": ["full_attention"]"#, "qwen2")
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
        msg.contains("model.safetensors") && msg.contains("tensor `model.layers.1.self_attn.o_proj.bias` is not used"),
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
        e.to_string().contains("tensor `model.embed_tokens.weight` has shape [1024, 64], expected [1099511627776, 64]"),
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
    assert!(
        msg(&d).contains("unsupported model_type \"gemma\"; supported: llama, mistral, mixtral, qwen2"),
        "{}",
        msg(&d)
    );
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
    // The same in a half-precision file loaded in its own dtype (read without widening):
    // an infinity in f16, found by its exponent bits.
    let d = copy_fixture("qwen2-tied", "inf16");
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let norm = st.tensor("model.norm.weight").unwrap();
    assert_eq!(norm.dtype(), Dtype::F16);
    let mut raw = norm.data().to_vec();
    raw[2 * 7..2 * 8].copy_from_slice(&half::f16::NEG_INFINITY.to_le_bytes());
    let view = safetensors::tensor::TensorView::new(norm.dtype(), norm.shape().to_vec(), &raw).unwrap();
    let mut all: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "model.norm.weight").collect();
    all.push(("model.norm.weight".into(), view));
    std::fs::write(d.join("model.safetensors"), safetensors::serialize(all, None).unwrap()).unwrap();
    for dtype in [DType::F16, DType::F32] {
        let e = load(&d, &dev, dtype).err().expect("an infinite weight is refused");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("tensor `model.norm.weight` holds a non-finite value (-inf) at flat index 7"),
            "{dtype:?}: {e}"
        );
    }
    // No weights at all.
    let d = copy_fixture("llama-gqa", "noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(msg(&d).contains("no model.safetensors, model.safetensors.index.json, model.int8"), "{}", msg(&d));
}
