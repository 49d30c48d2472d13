//! The learned maps of a hidden-state loss (`kd_loss::hidden`) from a student's width to its
//! teacher's: weights of the student (it carries them as `Decoder::hidden_proj`), so they live
//! with the model.

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};

use crate::model::init::Init;
use crate::rng::SplitMix;

fn cast_to<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// Maps the student's hidden states to the teacher's width, one linear map per layer pair.
#[derive(Module, Debug)]
pub struct HiddenProjection {
    /// `d_student -> d_teacher`, no bias; `None` when the widths are equal: the identity (as
    /// DistillKit's default), so the student's own residual stream is asked to match.
    pub maps: Option<Vec<Linear>>,
}

/// Separates the projection's weight stream and parameter ids from a decoder built from the
/// same seed, so that callers can pass the recipe's seed.
const SALT: u64 = 0x4869_6464_656E_5072;

impl HiddenProjection {
    /// Xavier (Glorot) uniform weights, U(-a, a) with a = sqrt(6 / (d_student + d_teacher)):
    /// DistillKit's default for these maps; it keeps the projected states' variance near the
    /// student's whichever width is larger. Seeded, with ids a function of `seed` (as
    /// the decoder's, so that a saved projection's bytes are too).
    pub fn new(n_pairs: usize, d_student: usize, d_teacher: usize, seed: u64, device: &Device) -> Self {
        if d_student == d_teacher {
            return HiddenProjection { maps: None };
        }
        let mut ids = SplitMix(seed ^ SALT);
        let mut init = Init::new(ids.next_u64(), device);
        let first_id = ids.next_u64() & !0xFFFF_FFFF;
        let a = (6.0 / (d_student + d_teacher) as f64).sqrt();
        let maps = (0..n_pairs as u64)
            .map(|k| {
                // `from_tensor` marks the weight trainable; the id is then swapped for ours.
                let (_, w, mapper) = Param::from_tensor(init.uniform([d_student, d_teacher], -a, a)).consume();
                Linear { weight: Param::from_mapped_value(ParamId::from(first_id + k + 1), w, mapper), bias: None }
            })
            .collect();
        HiddenProjection { maps: Some(maps) }
    }

    /// Pair `k`'s student states at the teacher's width, in f32. The map runs in its weight's
    /// dtype (the input is cast to it): f32 master weights unless the caller cast the module.
    pub(crate) fn project(&self, k: usize, s: Tensor<3>) -> Tensor<3> {
        match &self.maps {
            None => cast_to(s, DType::F32),
            Some(maps) => {
                let map = &maps[k];
                let s = cast_to(s, map.weight.val().dtype());
                cast_to(crate::model::linear::linear(map, s), DType::F32)
            }
        }
    }
}
