//! GGUF files written by llama.cpp's own gguf-py in its converter's layout
//! (scripts/make_gguf_in_fixture.py, from tests/fixtures/hf), not by our exporter: each must
//! load as the model transformers computes, with the tokenizer the Hugging Face folder has.

use super::*;
use crate::export::gguf::{GgmlType, Value};
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;

/// The Hugging Face fixtures the GGUF files were made from.
const FIXTURES: [&str; 2] = ["llama-gqa", "qwen2-tied"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn hf(name: &str) -> PathBuf {
    fixtures().join("hf").join(name)
}

fn gguf(file: &str) -> PathBuf {
    fixtures().join("gguf").join(file)
}

/// `ids` and `logits_f32` of a reference.safetensors.
fn reference(path: &Path) -> (Vec<i64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids =
        st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    (ids, crate::util::f32s_from_le(st.tensor("logits_f32").unwrap().data()))
}

fn logits(files: ModelFiles, ids: &[i64]) -> Vec<f32> {
    let dev = Device::flex();
    let model = files.load(&dev, DType::F32).unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &dev);
    model.forward(ids).into_data().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// Unquantized files (llama-gqa in F32, qwen2-tied in F16, its weights' own precision): the
/// shape of the folder's config.json, and transformers' f32 logits within 1e-5 (measured
/// 2.4e-7 and 1.3e-6; the folders' own test allows 2e-5). The file holds the folder's weights
/// exactly, so the logits are also the folder's to the bit: a slip in the un-permutation or the
/// dequantization too small for the bound still shows.
#[test]
fn converter_files_compute_what_transformers_computes() {
    for name in FIXTURES {
        let (file, dir) = (gguf(&format!("{name}.gguf")), hf(name));
        let config = ModelFiles::Gguf(&file).config().unwrap();
        assert_eq!(config, ModelFiles::Hf(&dir).config().unwrap(), "{name}");
        let (ids, want) = reference(&dir.join("reference.safetensors"));
        let got = logits(ModelFiles::Gguf(&file), &ids);
        let err = max_diff(&got, &want);
        println!("{name}.gguf: max |ours - transformers f32| = {err:e}");
        assert!(err < 1e-5, "{name}.gguf: {err} vs transformers in f32");
        // Counted, not `assert_eq!` on the vectors: 40k logits would drown the message.
        let folder = logits(ModelFiles::Hf(&dir), &ids);
        let differ = got.iter().zip(&folder).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{name}.gguf: logits differ from the folder's (max {:e})", max_diff(&got, &folder));
    }
}

/// Quantized files (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16 and F16 matrices, q/k among them):
/// numpy's float64 forward of the weights as gguf-py dequantizes them, within 1e-4 (ours runs
/// in f32: measured 3e-7). The quantization itself moves the logits by more than 1e-2, so a
/// dequantizer off by a block's scale or minimum shows.
#[test]
fn quantized_converter_files_compute_their_dequantized_weights() {
    for name in FIXTURES {
        let file = gguf(&format!("{name}-q.gguf"));
        assert_eq!(ModelFiles::Gguf(&file).config().unwrap(), ModelFiles::Hf(&hf(name)).config().unwrap(), "{name}");
        let bytes = std::fs::read(&file).unwrap();
        let g = Gguf::parse_header(&bytes, name).unwrap();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::BF16,
            GgmlType::F16,
        ] {
            assert!(g.tensors.iter().any(|t| t.ty == ty), "{name}-q.gguf has no {ty:?} tensor");
        }
        let (ids, want) = reference(&gguf(&format!("{name}-q.reference.safetensors")));
        let got = logits(ModelFiles::Gguf(&file), &ids);
        let err = max_diff(&got, &want);
        let (_, f32_logits) = reference(&hf(name).join("reference.safetensors"));
        let moved = max_diff(&want, &f32_logits);
        println!("{name}-q.gguf: max |ours - numpy| = {err:e}; the quantization moves the logits by {moved:e}");
        assert!(err < 1e-4, "{name}-q.gguf: {err} vs numpy on the dequantized weights");
        assert!(moved > 1e-2, "{name}-q.gguf: its reference is hardly quantized ({moved})");
    }
}

/// The tokenizer.json rebuilt from each file's metadata is the folder's own: the same
/// vocabulary id for id, EOS/BOS and ids on texts with spaces, tabs, newlines, accents, CJK,
/// emoji, a zero-width joiner and the special token spelled out. This 767-merge vocabulary
/// has no merge across the pieces any split makes (GPT-2's, Qwen2's or none encode these texts
/// alike), so `tokenizer.ggml.pre` is only read here; gguf_tokenizer's own tests cut by it.
#[test]
fn converter_files_tokenize_as_the_folders() {
    let texts = [
        "",
        " ",
        "Once upon a time, Mia had three apples.",
        "  two  spaces\tand a tab\n\n",
        "naïve café, Größe, 東京",
        "emoji 🦀🔥 and a joiner \u{200d}!",
        "\"Where is the red ball?\" asked Lily.<|endoftext|>The end. I'll say 123456 it's 3.14",
    ];
    let scratch = std::env::temp_dir().join(format!("distill-import-tests-{}", std::process::id()));
    for name in FIXTURES {
        let own = Tokenizer::load(&hf(name).join("tokenizer.json")).unwrap();
        for file in [format!("{name}.gguf"), format!("{name}-q.gguf")] {
            let path = ModelFiles::Gguf(&gguf(&file)).tokenizer_file(&scratch.join(&file).join("tokenizer.json"));
            let rebuilt = Tokenizer::load(&path.unwrap().expect("a GGUF file has a tokenizer")).unwrap();
            assert_eq!(rebuilt.first_difference(&own), None, "{file}");
            assert_eq!((rebuilt.eos_id, rebuilt.bos_id), (own.eos_id, own.bos_id), "{file}");
            for text in texts {
                assert_eq!(rebuilt.encode_doc(text).unwrap(), own.encode_doc(text).unwrap(), "{file}: {text:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A file whose `llama.block_count` says 1 or 3 layers while it holds 2 layers' tensors is
/// refused at the load, naming the tensor the metadata leaves over or the one it lacks.
#[test]
fn block_count_must_match_the_tensors() {
    let bytes = std::fs::read(gguf("llama-gqa.gguf")).unwrap();
    let original = Gguf::parse(&bytes, "llama-gqa.gguf").unwrap();
    let dir = std::env::temp_dir().join(format!("distill-import-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (blocks, named) in [
        (1, "tensor for `model.layers.1.input_layernorm.weight` is not used"),
        (3, "missing tensor `model.layers.2.input_layernorm.weight`: the config says 3 layers"),
    ] {
        let mut g = original.clone();
        let (_, v) = g.kv.iter_mut().find(|(k, _)| k == "llama.block_count").unwrap();
        assert_eq!(*v, Value::U32(2));
        *v = Value::U32(blocks);
        let file = dir.join(format!("blocks-{blocks}.gguf"));
        std::fs::write(&file, g.to_bytes()).unwrap();
        // The metadata alone cannot tell.
        assert_eq!(ModelFiles::Gguf(&file).config().unwrap().shape.n_layers, blocks as usize);
        // Not `unwrap_err`: a wrongly loaded model would print as its whole parameter tree.
        let e = match ModelFiles::Gguf(&file).load(&Device::flex(), DType::F32) {
            Ok(_) => panic!("block_count {blocks}: the {blocks}-layer model was loaded from 2 layers' tensors"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&file.display().to_string()) && e.contains(named), "block_count {blocks}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
