//! The parity probes other implementations are checked against: `distill logits` (a model's
//! logits for given tokens) and `distill attention` (the attention seam on given q/k/v).

use super::flags::{backend_device, expected, flag};
use super::{AttentionArgs, LogitsArgs, load_final, which};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::qkv_file::QkvFile;
use crate::model::store;
use crate::quant::int8::fake_quant_model;
use crate::recipe::TeacherDtype;

pub(super) fn logits(a: LogitsArgs) -> Result<()> {
    let device = backend_device(&a.backend)?;
    let dtype = flag::<TeacherDtype>("--dtype", &a.dtype)?.dtype();
    let model = &a.model;
    let m = open_model(model, a.teacher, &device, dtype)?;
    let m = if a.int8 { fake_quant_model(&m) } else { m };
    let m = m.cast(dtype);
    let ids: Vec<u32> = match (a.ids, a.text) {
        (Some(s), _) => s
            .split(',')
            .map(|t| t.trim().parse::<u32>().map_err(|_| Error::input(format!("--ids: `{t}` is not a token id"))))
            .collect::<Result<_>>()?,
        (None, Some(_)) if model.is_file() => {
            return Err(Error::input(format!("{}: give --ids (a GGUF's tokenizer is not read here)", model.display())));
        }
        // Every kind of model directory keeps its tokenizer.json at the top.
        (None, Some(t)) => Tokenizer::load(&model.join("tokenizer.json"))?.encode_prompt(&t)?,
        (None, None) => return Err(Error::input("give --ids or --text")),
    };
    let v = m.config.vocab_size;
    if ids.is_empty() {
        return Err(Error::input("no tokens to run"));
    }
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
        return Err(Error::input(format!("--ids: token id {bad} is outside the model's vocabulary ({v})")));
    }
    let t = ids.len();
    let logits: Vec<f32> = m
        .forward(crate::model::token_tensor(&ids, &device))
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    match a.out {
        Some(p) => {
            crate::util::write_f32_safetensors(&p, vec![("logits".into(), vec![t, v], logits)])?;
            println!("wrote {} ({t} x {v})", p.display());
        }
        None => {
            let rows: Vec<&[f32]> = logits.chunks(v).collect();
            println!("{}", serde_json::json!({"ids": ids, "logits": rows}));
        }
    }
    Ok(())
}

pub(super) fn attention(a: AttentionArgs) -> Result<()> {
    let device = backend_device(&a.backend)?;
    let file = QkvFile::open(&a.input)?;
    // The kernel is checked in f32 and bf16 only: f16 is not a dtype the parity script runs.
    let dtype = match a.dtype.parse::<TeacherDtype>() {
        Ok(d @ (TeacherDtype::F32 | TeacherDtype::Bf16)) => d.dtype(),
        _ => return Err(Error::input(format!("--dtype: {}", expected(&["f32", "bf16"], &a.dtype)))),
    };
    let outputs = file.run(&device, dtype, a.window)?;
    crate::util::write_f32_safetensors(&a.out, outputs)
}

/// A model from a run directory (its student, or its teacher with `teacher`), a model
/// directory (model.json), a Hugging Face or export folder (config.json) or a `.gguf` file.
pub(super) fn open_model(
    model: &std::path::Path,
    teacher: bool,
    device: &burn::tensor::Device,
    dtype: burn::tensor::DType,
) -> Result<crate::model::Decoder> {
    let run = crate::run_dir::RunDir(model).resolved_recipe().is_file();
    if teacher && !run {
        return Err(Error::input(format!(
            "--teacher: {} is a single model, not a run directory: there is no teacher to choose",
            model.display()
        )));
    }
    Ok(if model.extension().is_some_and(|e| e == "gguf") {
        crate::export::open(model, device)?
    } else if model.join("model.json").is_file() {
        store::load(model, device)?.0
    } else if model.join("config.json").is_file() && !crate::run_dir::RunDir(model).resolved_recipe().is_file() {
        crate::teacher::hf::load(model, device, dtype)?.0
    } else if crate::run_dir::RunDir(model).resolved_recipe().is_file() {
        load_final(model, which(teacher), device)?
    } else {
        return Err(Error::input(format!(
            "{}: not a model: expected a run directory (recipe.resolved.toml), a model directory \
             (model.json), a Hugging Face or export folder (config.json) or a .gguf file",
            model.display()
        )));
    })
}
