//! Every path of a run directory, in one place: what `distill run` writes where (the README's
//! "What the quickstart does, prints and writes" lists the same tree), and the completion
//! markers by which `resume` re-enters a run at its first unfinished stage.
//!
//! A borrowed view over the run's root, so any function holding the directory's `&Path` names
//! its files through it instead of spelling path literals.

use std::path::{Path, PathBuf};

/// The two trainings of a run, each with its own directory: the teacher's pretraining (when the
/// recipe asks for it) and the student's distillation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Teacher,
    Student,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Teacher => "teacher",
            Phase::Student => "student",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RunDir<'a>(pub &'a Path);

impl RunDir<'_> {
    pub fn root(&self) -> &Path {
        self.0
    }

    /// The recipe with every default, config file and `--set` applied.
    pub fn resolved_recipe(&self) -> PathBuf {
        self.0.join("recipe.resolved.toml")
    }

    /// The vocabulary of the run (trained, or the teacher's), in Hugging Face format.
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }

    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }

    /// Written last by data preparation: its presence marks the stage as complete.
    pub fn data_meta(&self) -> PathBuf {
        self.data().join("meta.json")
    }

    pub fn train_tokens(&self) -> PathBuf {
        self.data().join("train.u32")
    }

    pub fn valid_tokens(&self) -> PathBuf {
        self.data().join("valid.u32")
    }

    pub fn filter_report(&self) -> PathBuf {
        self.data().join("filter_report.json")
    }

    /// A curriculum's row scores, stored with the data they score.
    pub fn difficulty(&self, score: &str) -> PathBuf {
        self.data().join(format!("difficulty-{score}.json"))
    }

    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }

    pub fn loss_plot(&self) -> PathBuf {
        self.0.join("loss.svg")
    }

    /// `teacher/` or `student/`: holds `checkpoints/` and `final/`.
    pub fn phase(&self, phase: Phase) -> PathBuf {
        self.0.join(phase.name())
    }

    pub fn checkpoints(&self, phase: Phase) -> PathBuf {
        self.phase(phase).join("checkpoints")
    }

    /// The trained model of a phase (model.json + model.bpk + tokenizer.json): usable alone.
    pub fn final_model(&self, phase: Phase) -> PathBuf {
        self.phase(phase).join("final")
    }

    /// The phase's completion marker.
    pub fn is_trained(&self, phase: Phase) -> bool {
        self.final_model(phase).join("model.json").is_file()
    }

    pub fn export(&self) -> PathBuf {
        self.0.join("export")
    }

    /// The teacher cache unless `cache.path` shares one between runs.
    pub fn default_cache(&self) -> PathBuf {
        self.0.join("teacher_cache")
    }

    /// The final table; its presence marks the run as complete.
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.json")
    }
}
