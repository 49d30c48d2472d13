//! Hidden-state distillation as the trainer runs it (`[distill.hidden]`): which block outputs
//! of student and teacher are compared, and the projection between their widths, which trains
//! with the student (it rides in the student's module as `hidden_proj`, so the optimizer,
//! gradient clipping and checkpoints treat it as one more set of weights).

use burn::tensor::{Device, Tensor};

use crate::kd_loss::hidden::{HiddenLoss, HiddenProjection, hidden_loss};
use crate::model::Decoder;

/// The resolved hidden-state loss of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenJob {
    /// Its weight in the step's loss: `total = kd + weight * hidden`.
    pub weight: f64,
    pub loss: HiddenLoss,
    /// `(student block, teacher block)` outputs compared, 0-based.
    pub pairs: Vec<(usize, usize)>,
    /// The teacher's width, which the projection maps the student's to.
    pub d_teacher: usize,
}

/// Keeps the projection's seed apart from the student's.
const SALT: u64 = 0x48_5052_4f4a;

impl HiddenJob {
    pub fn student_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.0).collect()
    }

    pub fn teacher_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.1).collect()
    }

    /// `model` with a fresh projection (a function of `seed`) on `device`.
    pub fn attach(&self, mut model: Decoder, seed: u64, device: &Device) -> Decoder {
        let d = model.config.shape.d_model;
        model.hidden_proj = Some(HiddenProjection::new(self.pairs.len(), d, self.d_teacher, seed ^ SALT, device));
        model
    }

    /// The loss between the student's block outputs and the teacher's, over the tokens `mask`
    /// weighs (the projection is `student`'s own).
    pub fn loss(&self, model: &Decoder, student: &[Tensor<3>], teacher: &[Tensor<3>], mask: Tensor<1>) -> Tensor<1> {
        let proj = model.hidden_proj.as_ref().expect("attached when the job was made");
        hidden_loss(student, teacher, proj, mask, self.loss)
    }
}
