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

    /// One byte per token of `train.u32`: [`crate::data::tokens::LOSS`], `DOC_START`.
    pub fn train_flags(&self) -> PathBuf {
        self.data().join("train.flags")
    }

    pub fn valid_flags(&self) -> PathBuf {
        self.data().join("valid.flags")
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

    /// The latest `distill eval --json` object (the report's eval table).
    pub fn eval_report(&self) -> PathBuf {
        self.0.join("eval.json")
    }

    /// The latest `distill speculative --json` object.
    pub fn speculative_report(&self) -> PathBuf {
        self.0.join("speculative.json")
    }

    /// The error that ended the last `run` / `resume` of this directory (removed when one
    /// starts again).
    pub fn failure(&self) -> PathBuf {
        self.0.join("FAILED")
    }

    /// `plots/*.svg`, redrawn at each evaluation.
    pub fn plots(&self) -> PathBuf {
        self.0.join("plots")
    }

    pub fn report(&self) -> PathBuf {
        self.0.join("report.html")
    }

    /// Where the run stands: running (its LOCK names a live process), finished (it wrote its
    /// summary), failed (its last process wrote an error, or died holding the LOCK), stopped.
    pub fn status(&self) -> RunStatus {
        let lock = std::fs::read_to_string(self.0.join("LOCK")).ok().and_then(|t| t.trim().parse::<u32>().ok());
        match lock {
            Some(pid) if alive(pid) => return RunStatus::Running(pid),
            Some(pid) => return RunStatus::Failed(format!("process {pid} ended holding the run (killed?)")),
            None => {}
        }
        if self.summary().is_file() {
            return RunStatus::Finished;
        }
        match std::fs::read_to_string(self.failure()) {
            Ok(why) => RunStatus::Failed(why.lines().next().unwrap_or_default().to_string()),
            Err(_) => RunStatus::Stopped,
        }
    }
}

/// [`RunDir::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Running(u32),
    Finished,
    Stopped,
    Failed(String),
}

impl RunStatus {
    pub fn word(&self) -> &'static str {
        match self {
            RunStatus::Running(_) => "running",
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed(_) => "failed",
        }
    }
}

/// A run directory held by one process: `LOCK` holds its pid, created exclusively, removed
/// when dropped. A second `distill` on the same run is refused; the lock of a process that
/// is gone (killed, crashed) is taken over.
#[derive(Debug)]
pub struct RunLock(PathBuf);

impl RunLock {
    pub fn acquire(dir: &Path) -> crate::Result<RunLock> {
        use std::io::Write;
        let path = dir.join("LOCK");
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::runtime(format!("{}: {e}", dir.display())))?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())
                        .map_err(|e| crate::Error::runtime(format!("{}: {e}", path.display())))?;
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = text.trim().parse().ok();
                    match pid {
                        Some(p) if alive(p) => {
                            return Err(crate::Error::input(format!(
                                "{}: this run is in use by process {p} (its LOCK file); wait for it to finish or \
                                 stop it (Ctrl-C checkpoints), then retry",
                                dir.display()
                            )));
                        }
                        // Gone (or unreadable, from a crash while writing it): take over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(crate::Error::runtime(format!("{}: cannot create: {e}", path.display()))),
            }
        }
        Err(crate::Error::input(format!("{}: another process took the run's LOCK first", dir.display())))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether process `pid` exists (Linux: its /proc entry; elsewhere assume it does).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live holder (this process) refuses a second lock; a dead pid's lock is taken over;
    /// dropping the lock removes the file.
    #[test]
    fn lock_refuses_a_live_holder_and_takes_over_a_dead_one() {
        let dir = std::env::temp_dir().join(format!("distill-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = RunLock::acquire(&dir).unwrap();
        let e = RunLock::acquire(&dir).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(&format!("in use by process {}", std::process::id())), "{e}");
        drop(held);
        assert!(!dir.join("LOCK").exists());
        // A pid that cannot exist (above Linux's pid_max), and an empty file: both stale.
        for stale in ["4294967295\n", ""] {
            std::fs::write(dir.join("LOCK"), stale).unwrap();
            let l = RunLock::acquire(&dir).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("LOCK")).unwrap().trim(), std::process::id().to_string());
            drop(l);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
