//! Getting the frozen teacher a recipe names, and its identity: the files that make it (hashed
//! into a cache's identity) and how the recipe names it (recorded in the cache, so a later run
//! can trust the cache without the teacher).

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::data::RunData;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::import::ModelFiles;
use crate::model::{Decoder, store};
use crate::recipe::{LogitsSource, Recipe, TeacherDtype, TeacherKind};
use crate::run_dir::Phase;
use crate::run_dir::RunDir;

/// The teacher of `recipe` in the run directory `run_dir` (where a pretrained one lives).
pub struct Teacher<'a> {
    recipe: &'a Recipe,
    run_dir: &'a Path,
}

impl<'a> Teacher<'a> {
    pub fn of(recipe: &'a Recipe, run_dir: &'a Path) -> Self {
        Teacher { recipe, run_dir }
    }

    /// Load the frozen teacher, checked against the prepared data (same tokenizer, context
    /// enough for `seq_len`) and cast to `teacher.dtype`. A teacher the run pretrains itself
    /// comes from `pretrain` (the pipeline's training stage, which resumes or loads it).
    pub fn obtain(
        &self,
        d: &RunData,
        device: &Device,
        log: &mut dyn FnMut(String),
        pretrain: impl FnOnce(&mut dyn FnMut(String)) -> Result<Decoder>,
    ) -> Result<Decoder> {
        let (recipe, dir) = (self.recipe, self.run_dir);
        let tok_hash = &d.tok_hash;
        let vocab = d.vocab;
        let teacher = match recipe.teacher.kind {
            TeacherKind::Hf | TeacherKind::Gguf => {
                let p = recipe.teacher.path.as_ref().expect("validated");
                let (t, tok) = match recipe.teacher.kind {
                    TeacherKind::Hf => crate::teacher::hf::load(p, device, recipe.teacher.dtype.dtype())?,
                    _ => (
                        ModelFiles::Gguf(p).load(device, recipe.teacher.dtype.dtype())?,
                        Tokenizer::load(&gguf_tokenizer_file(recipe, dir)?)?,
                    ),
                };
                if &tok.hash() != tok_hash {
                    return Err(Error::input(format!(
                        "teacher {}: its tokenizer differs from the one the data in {} was prepared with: the vocabularies must be identical",
                        p.display(),
                        dir.display()
                    )));
                }
                log(format!("teacher: {} ({} parameters in matmuls)", p.display(), t.config.matmul_params()));
                t
            }
            TeacherKind::Checkpoint => {
                let p = recipe.teacher.path.as_ref().expect("validated");
                let (t, hash) = store::load(p, device)?;
                if &hash != tok_hash || t.config.vocab_size != vocab {
                    return Err(Error::input(format!(
                        "teacher {} was trained with a different tokenizer (vocab {}) than the data (vocab {vocab}, {}): the vocabularies must be identical",
                        p.display(),
                        t.config.vocab_size,
                        RunDir(dir).tokenizer().display()
                    )));
                }
                t
            }
            TeacherKind::Pretrain => pretrain(log)?,
        };
        if recipe.data.seq_len > teacher.config.shape.max_seq_len {
            return Err(Error::input(format!(
                "data.seq_len ({}) exceeds the teacher's context ({} tokens)",
                recipe.data.seq_len, teacher.config.shape.max_seq_len
            )));
        }
        Ok(match recipe.teacher.dtype {
            TeacherDtype::F32 => teacher,
            _ if teacher.config.shape.layer_pattern.contains('M') => {
                return Err(Error::input(
                    "teacher.dtype: half precision is supported for attention-only teachers; this teacher has Mamba-2 layers",
                ));
            }
            half => teacher.cast(half.dtype()),
        })
    }

    /// A loaded teacher (`hf` or `checkpoint`) before the run's data exists, for the
    /// teacher-perplexity filter: cast to `teacher.dtype`, nothing checked against data yet.
    pub fn load_before_data(&self, device: &Device) -> Result<Decoder> {
        let recipe = self.recipe;
        let p = recipe.teacher.path.as_ref().expect("validated");
        let files = ModelFiles::teacher(recipe.teacher.kind, p).expect("a loaded teacher has a path");
        files.load(device, recipe.teacher.dtype.dtype())
    }

    /// The files that make the teacher (weights and shape), in hashing order.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let (recipe, dir) = (self.recipe, self.run_dir);
        Ok(match recipe.teacher.kind {
            TeacherKind::Pretrain => {
                let fin = RunDir(dir).final_model(Phase::Teacher);
                vec![fin.join("model.json"), fin.join("model.bpk")]
            }
            TeacherKind::Checkpoint => {
                let p = recipe.teacher.path.as_ref().expect("validated");
                vec![p.join("model.json"), p.join("model.bpk")]
            }
            TeacherKind::Gguf => vec![recipe.teacher.path.clone().expect("validated")],
            TeacherKind::Hf => {
                let p = recipe.teacher.path.as_ref().expect("validated");
                let mut w: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| Error::input(format!("{}: {e}", p.display())))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                    .collect();
                w.sort();
                w.insert(0, p.join("config.json"));
                w
            }
        })
    }

    /// A digest of the teacher's weights and shape, as files on disk.
    pub fn hash(&self) -> Result<String> {
        crate::teacher::cache::hash_files(&self.files()?)
    }

    /// The teacher as the recipe names it (recorded in its cache).
    pub fn source(&self) -> String {
        match (self.recipe.teacher.kind, &self.recipe.teacher.path) {
            (TeacherKind::Hf, Some(p)) => format!("hf {}", p.display()),
            (TeacherKind::Checkpoint, Some(p)) => format!("checkpoint {}", p.display()),
            (TeacherKind::Gguf, Some(p)) => format!("gguf {}", p.display()),
            _ => format!("pretrain {}", RunDir(self.run_dir).final_model(Phase::Teacher).display()),
        }
    }
}

/// Where a GGUF teacher's vocabulary is written as a tokenizer.json (`<run>/teacher/`), rebuilt
/// from the file each time it is asked for (cheap, and never stale).
pub fn gguf_tokenizer_file(recipe: &Recipe, run_dir: &Path) -> Result<PathBuf> {
    let p = recipe.teacher.path.as_ref().expect("validated");
    let scratch = RunDir(run_dir).phase(Phase::Teacher).join("tokenizer.json");
    Ok(ModelFiles::Gguf(p).tokenizer_file(&scratch)?.expect("a GGUF file has a vocabulary"))
}

/// The teacher's tokenizer.json: in its folder, or, for a cached teacher whose folder is gone,
/// the copy its cache keeps (so such a run can still prepare its data). A GGUF teacher's is
/// rebuilt from the file into the run directory `run_dir`.
pub fn teacher_tokenizer_in(recipe: &Recipe, run_dir: &Path) -> Result<PathBuf> {
    let file = recipe.teacher.path.as_ref().is_some_and(|p| p.is_file());
    match recipe.teacher.kind {
        TeacherKind::Gguf if file => gguf_tokenizer_file(recipe, run_dir),
        // Gone: a cached teacher's cache keeps a copy.
        _ => Ok(teacher_tokenizer(recipe)),
    }
}

/// [`teacher_tokenizer_in`] for a teacher folder (hf or checkpoint).
pub fn teacher_tokenizer(recipe: &Recipe) -> PathBuf {
    let own = recipe.teacher.path.as_ref().expect("validated").join("tokenizer.json");
    let copy = recipe.cache_dir().join("tokenizer.json");
    if !own.is_file() && recipe.teacher.logits == LogitsSource::Cache && copy.is_file() { copy } else { own }
}

/// `teacher.dtype` as a cache's identity records it.
pub fn dtype_name(d: TeacherDtype) -> String {
    format!("{d:?}").to_lowercase()
}
