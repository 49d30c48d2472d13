//! Trained models from files, for either side of a distillation: a Hugging Face folder, a
//! llama.cpp GGUF file or one of our checkpoints, each with its shape (read without the
//! weights), its weights and its vocabulary. A teacher and a student loaded this way must speak
//! the same vocabulary id for id.

pub mod config;

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};

pub use config::{PruneSection, StudentInit};

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::export::gguf::Gguf;
use crate::export::gguf_load;
use crate::model::{Decoder, DecoderConfig, store};
use crate::teacher::config::TeacherKind;
use crate::teacher::gguf_tokenizer;

/// Where a trained model's files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFiles<'a> {
    /// config.json, safetensors, tokenizer.json.
    Hf(&'a Path),
    /// One `.gguf` file: metadata, tensors and tokenizer.
    Gguf(&'a Path),
    /// model.json + model.bpk (our `final/` or an exported checkpoint).
    Checkpoint(&'a Path),
}

impl<'a> ModelFiles<'a> {
    /// A loaded teacher's files (`None` for one the run pretrains).
    pub fn teacher(kind: TeacherKind, path: &'a Path) -> Option<Self> {
        match kind {
            TeacherKind::Hf => Some(ModelFiles::Hf(path)),
            TeacherKind::Gguf => Some(ModelFiles::Gguf(path)),
            TeacherKind::Checkpoint => Some(ModelFiles::Checkpoint(path)),
            TeacherKind::Pretrain => None,
        }
    }

    /// A loaded student's files (`None` for a random or pruned start).
    pub fn student(init: StudentInit, path: &'a Path) -> Option<Self> {
        match init {
            StudentInit::Hf => Some(ModelFiles::Hf(path)),
            StudentInit::Gguf => Some(ModelFiles::Gguf(path)),
            StudentInit::Random | StudentInit::Prune => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelFiles::Hf(p) | ModelFiles::Gguf(p) | ModelFiles::Checkpoint(p) => p,
        }
    }

    /// The model's shape and vocabulary size, from its metadata alone.
    pub fn config(&self) -> Result<DecoderConfig> {
        match self {
            ModelFiles::Hf(dir) => crate::teacher::hf::config(dir),
            ModelFiles::Gguf(file) => {
                let (g, what) = gguf_load::read(file, Gguf::parse_header)?;
                gguf_load::config_of(&g, &what)
            }
            ModelFiles::Checkpoint(dir) => store::read_config(dir),
        }
    }

    /// The model with its weights in `dtype` (each tensor converted as it is read).
    pub fn load(&self, device: &Device, dtype: DType) -> Result<Decoder> {
        match self {
            ModelFiles::Hf(dir) => Ok(crate::teacher::hf::load(dir, device, dtype)?.0),
            ModelFiles::Gguf(file) => gguf_load::open_as(file, device, dtype),
            ModelFiles::Checkpoint(dir) => Ok(store::load(dir, device)?.0.cast(dtype)),
        }
    }

    /// The file the model's vocabulary is in as a tokenizer.json: the folder's own, or one
    /// rebuilt from a GGUF file's metadata into `scratch` (a file of the run's own). A
    /// checkpoint of ours keeps only its tokenizer's hash: `None`.
    pub fn tokenizer_file(&self, scratch: &Path) -> Result<Option<PathBuf>> {
        match self {
            ModelFiles::Hf(dir) => Ok(Some(dir.join("tokenizer.json"))),
            ModelFiles::Gguf(file) => {
                let g = gguf_tokenizer::read_metadata(file)?;
                let json = gguf_tokenizer::tokenizer_json(&g, &file.display().to_string())?;
                if let Some(parent) = scratch.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::runtime(format!("{}: {e}", parent.display())))?;
                }
                crate::util::write_atomic(scratch, json.as_bytes())?;
                Ok(Some(scratch.to_path_buf()))
            }
            ModelFiles::Checkpoint(_) => Ok(None),
        }
    }
}

/// Teacher and student must share their vocabulary id for id: the KL compares their
/// distributions position by position of the same ids.
pub fn same_vocabulary(teacher: &Tokenizer, student: &Tokenizer, student_what: &str) -> Result<()> {
    match teacher.first_difference(student) {
        None => Ok(()),
        Some((id, t, s)) => Err(Error::input(format!(
            "{student_what}: the student's vocabulary differs from the teacher's at id {id} (teacher {t:?}, student {s:?}): \
             teacher and student must share one tokenizer id for id"
        ))),
    }
}

#[cfg(test)]
mod tests;
