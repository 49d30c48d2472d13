//! Training: one loop for both the teacher's pretraining (hard labels) and the student's
//! distillation (hard labels + the frozen teacher's soft targets).
//!
//! burn-train's `Learner` is built around one model and one `forward` per step; a distillation
//! step drives two models (a frozen teacher on the plain device, a student under autodiff),
//! accumulates gradients, clips by global norm and checkpoints optimizer + data cursor
//! atomically, so we write the loop ourselves and reuse burn's optimizer, gradient accumulator
//! and burnpack records.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod decay;
pub mod freeze;
pub mod hidden;
pub mod metrics;
mod read_ahead;
pub mod recompute;
pub mod schedule;
pub mod trainer;

pub use trainer::{CurriculumRun, Phase, TrainJob, train};
