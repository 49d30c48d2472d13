//! Model shapes as a recipe writes them: `[teacher.model]` / `[student.model]` keys over an
//! optional shared `configs/*.toml` file, merged and completed into a [`ModelShape`] at load.
//! The model itself only ever sees the complete [`ModelShape`].

use serde::{Deserialize, Serialize};

use super::locate::{locate, toml_error};
use super::{Recipe, StudentInit, StudentSection, TeacherKind, TeacherSection};
use crate::error::{Error, Result};
use crate::import::ModelFiles;
use crate::model::config::{
    AttentionImpl, LinformerShape, MambaShape, ModelShape, MoeShape, PerformerShape, RopeScaling, default_layer_pattern,
};

/// A model shape, as written in a recipe or a `configs/*.toml` file: every key optional so that
/// inline keys can override a shared config file. `to_shape` turns it into a [`ModelShape`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_ff: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_embeddings: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mamba: Option<MambaShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_impl: Option<AttentionImpl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linformer: Option<LinformerShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performer: Option<PerformerShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeShape>,
}

impl PartialShape {
    /// Keys set here win over `base`.
    fn over(&self, base: &PartialShape) -> PartialShape {
        PartialShape {
            d_model: self.d_model.or(base.d_model),
            n_layers: self.n_layers.or(base.n_layers),
            n_heads: self.n_heads.or(base.n_heads),
            n_kv_heads: self.n_kv_heads.or(base.n_kv_heads),
            d_ff: self.d_ff.or(base.d_ff),
            max_seq_len: self.max_seq_len.or(base.max_seq_len),
            rope_theta: self.rope_theta.or(base.rope_theta),
            tie_embeddings: self.tie_embeddings.or(base.tie_embeddings),
            norm_eps: self.norm_eps.or(base.norm_eps),
            layer_pattern: self.layer_pattern.clone().or_else(|| base.layer_pattern.clone()),
            window: self.window.or(base.window),
            qkv_bias: self.qkv_bias.or(base.qkv_bias),
            rope_scaling: self.rope_scaling.clone().or_else(|| base.rope_scaling.clone()),
            mamba: self.mamba.clone().or_else(|| base.mamba.clone()),
            attention_impl: self.attention_impl.or(base.attention_impl),
            linformer: self.linformer.clone().or_else(|| base.linformer.clone()),
            performer: self.performer.clone().or_else(|| base.performer.clone()),
            moe: self.moe.clone().or_else(|| base.moe.clone()),
        }
    }

    /// Missing optional keys take defaults; a missing required key is `Err(key name)`.
    pub fn to_shape(&self) -> std::result::Result<ModelShape, &'static str> {
        Ok(ModelShape {
            d_model: self.d_model.ok_or("d_model")?,
            n_layers: self.n_layers.ok_or("n_layers")?,
            n_heads: self.n_heads.ok_or("n_heads")?,
            n_kv_heads: self.n_kv_heads.or(self.n_heads).ok_or("n_kv_heads")?,
            d_ff: self.d_ff.ok_or("d_ff")?,
            max_seq_len: self.max_seq_len.unwrap_or(512),
            rope_theta: self.rope_theta.unwrap_or(10_000.0),
            tie_embeddings: self.tie_embeddings.unwrap_or(false),
            norm_eps: self.norm_eps.unwrap_or(1e-5),
            layer_pattern: self.layer_pattern.clone().unwrap_or_else(default_layer_pattern),
            window: self.window,
            qkv_bias: self.qkv_bias.unwrap_or(false),
            o_bias: false,
            window_from_layer: 0,
            rope_scaling: self.rope_scaling.clone(),
            mamba: self.mamba.clone().unwrap_or_default(),
            attention_impl: self.attention_impl.unwrap_or_default(),
            linformer: self.linformer.clone().unwrap_or_default(),
            performer: self.performer.clone().unwrap_or_default(),
            moe: self.moe.clone(),
        })
    }

    fn from_shape(s: &ModelShape) -> PartialShape {
        PartialShape {
            d_model: Some(s.d_model),
            n_layers: Some(s.n_layers),
            n_heads: Some(s.n_heads),
            n_kv_heads: Some(s.n_kv_heads),
            d_ff: Some(s.d_ff),
            max_seq_len: Some(s.max_seq_len),
            rope_theta: Some(s.rope_theta),
            tie_embeddings: Some(s.tie_embeddings),
            norm_eps: Some(s.norm_eps),
            layer_pattern: Some(s.layer_pattern.clone()),
            window: s.window,
            qkv_bias: Some(s.qkv_bias),
            rope_scaling: s.rope_scaling.clone(),
            mamba: Some(s.mamba.clone()),
            attention_impl: (!s.attention_impl.is_fused()).then_some(s.attention_impl),
            linformer: (!s.linformer.is_default()).then(|| s.linformer.clone()),
            performer: (!s.performer.is_default()).then(|| s.performer.clone()),
            moe: s.moe.clone(),
        }
    }
}

impl TeacherSection {
    /// The resolved shape (only valid after [`Recipe::load`]).
    pub fn shape(&self) -> ModelShape {
        self.model.to_shape().expect("recipe was resolved at load")
    }
}

impl StudentSection {
    pub fn shape(&self) -> ModelShape {
        self.model.to_shape().expect("recipe was resolved at load")
    }
}

impl Recipe {
    /// The shape a student starts from when it is not random: an HF/GGUF student's own (which
    /// `[student.model]` may not change but for `attention_impl`), or a pruned student's
    /// teacher's (which its keys shrink).
    fn student_base(&self, file: &str, text: &str, ov: &[String]) -> Result<Option<PartialShape>> {
        let s = &self.student;
        let at = |key: &str, msg: String| Error::input(format!("{}: key `{key}`: {msg}", locate(file, text, ov, key)));
        let files = match (s.init, &s.path) {
            (StudentInit::Random, _) => return Ok(None),
            (StudentInit::Prune, _) if self.teacher.kind == TeacherKind::Pretrain => {
                return Ok(Some(self.teacher.model.clone()));
            }
            (StudentInit::Prune, _) => match &self.teacher.path {
                Some(p) => ModelFiles::teacher(self.teacher.kind, p).expect("a loaded teacher"),
                None => return Err(at("teacher.path", "required: a pruned student is cut from the teacher".into())),
            },
            (_, None) => {
                return Err(at("student.path", format!("required when student.init = \"{}\"", init_name(s.init))));
            }
            (init, Some(p)) => ModelFiles::student(init, p).expect("hf or gguf"),
        };
        let key = if s.init == StudentInit::Prune { "teacher.path" } else { "student.path" };
        let own = PartialShape::from_shape(&files.config().map_err(|e| at(key, e.to_string()))?.shape);
        // A loaded student's keys may only repeat its files' values (a resolved recipe does).
        // `moe` turns the loaded dense FFNs into experts (upcycling).
        let given = PartialShape { attention_impl: None, moe: None, ..s.model.clone() };
        if s.init != StudentInit::Prune && (s.config.is_some() || given.over(&own) != own) {
            return Err(at(
                "student.model",
                format!(
                    "a student loaded from {} takes its shape from its files: leave [student.model] and student.config out (attention_impl and moe excepted)",
                    files.path().display()
                ),
            ));
        }
        Ok(Some(own))
    }

    /// Merges each `[x.model]` over the file named by `x.config` and completes it, so that
    /// `shape()` cannot fail afterwards; a missing required key is an error naming it.
    pub(super) fn resolve_shapes(&mut self, file: &str, text: &str, ov: &[String]) -> Result<()> {
        // A loaded teacher brings its shape (model.json or config.json).
        let teacher_shape = self.teacher.kind == TeacherKind::Pretrain;
        for section in ["teacher", "student"] {
            // A loaded or pruned student's shape comes from files (read now, so that every
            // rule on the student's shape holds before anything runs) or from the teacher's,
            // resolved just before.
            let start = if section == "student" { self.student_base(file, text, ov)? } else { None };
            let (config, model) = match section {
                "teacher" => (self.teacher.config.take(), &mut self.teacher.model),
                _ => (self.student.config.take(), &mut self.student.model),
            };
            if section == "teacher" && !teacher_shape {
                // Not used: the resolved recipe shows that by leaving them out.
                *model = PartialShape::default();
                continue;
            }
            let base = match &config {
                Some(p) => {
                    let t = crate::error::read_to_string(p).map_err(|e| {
                        let loc = locate(file, text, ov, &format!("{section}.config"));
                        Error::input(format!("{loc}: key `{section}.config`: {e}"))
                    })?;
                    toml::from_str::<PartialShape>(&t).map_err(|e| toml_error(&p.display().to_string(), &t, &e))?
                }
                None => PartialShape::default(),
            };
            let merged = match &start {
                Some(start) => model.over(&base).over(start),
                None => model.over(&base),
            };
            let shape = merged.to_shape().map_err(|missing| {
                let loc = locate(file, text, ov, &format!("{section}.model"));
                Error::input(format!(
                    "{loc}: key `{section}.model.{missing}` is required: set it under [{section}.model] or in the file named by `{section}.config`"
                ))
            })?;
            *model = PartialShape::from_shape(&shape);
        }
        // Read only when pruning: the resolved recipe shows that by leaving it out.
        if self.student.init != StudentInit::Prune {
            self.student.prune = None;
        }
        Ok(())
    }
}

fn init_name(i: StudentInit) -> String {
    serde_json::to_value(i).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}
