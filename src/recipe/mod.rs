//! The recipe: a TOML file parsed into plain serde data, with `--set` overrides, model shapes
//! pulled in from `configs/`, and one validation pass. Everything downstream trusts a `Recipe`.
//!
//! Errors always say which file, which key, where (line:column) and what was expected, because
//! a recipe error is the most common thing a user will ever see from us.
//!
//! - `sections`: every section as plain data, with its defaults.
//! - `shape`: `[teacher.model]` / `[student.model]` merged with their `configs/` files.
//! - `overrides`: `--set KEY=VALUE`.
//! - `validate`: the rules, one function per section.
//! - `locate`: where a key is set, for the error messages.

mod locate;
mod overrides;
mod sections;
mod shape;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use locate::toml_error;
use overrides::apply_override;

pub use sections::*;
pub use shape::PartialShape;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub run: RunSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub tokenizer: TokenizerSection,
    pub teacher: TeacherSection,
    pub student: StudentSection,
    #[serde(default)]
    pub distill: DistillSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub curriculum: CurriculumSection,
    #[serde(default)]
    pub qat: QatSection,
    /// `distill synth`: the teacher writes a dataset (left out of the resolved recipe when
    /// untouched).
    #[serde(default, skip_serializing_if = "crate::synth::untouched")]
    pub synth: crate::synth::SynthSection,
}

impl Recipe {
    /// Read, override, resolve and validate a recipe file. `overrides` are `a.b.c=value`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe> {
        let text = crate::error::read_to_string(path)?;
        Recipe::from_str_with(&text, path, overrides)
    }

    pub fn from_str_with(text: &str, path: &Path, overrides: &[String]) -> Result<Recipe> {
        let file = path.display().to_string();
        // First pass on the text itself, so type and unknown-key errors carry a line/column.
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
            for ov in overrides {
                apply_override(&mut table, ov)?;
                recipe = toml::Value::Table(table.clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| Error::input(format!("--set {ov}: {}", e.message().trim())))?;
            }
        }
        recipe.resolve_shapes(&file, text, overrides)?;
        recipe.validate(&file, text, overrides)?;
        Ok(recipe)
    }

    /// The fully resolved recipe as TOML: what `validate` prints and the run directory keeps.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe always serializes")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.out_dir.join(&self.run.name)
    }

    /// Where the teacher's top-k cache lives.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.path.clone().unwrap_or_else(|| crate::run_dir::RunDir(&self.run_dir()).default_cache())
    }
}

#[cfg(test)]
mod tests;
