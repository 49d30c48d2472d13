//! Hidden-state distillation: the student's residual stream at some block outputs is pulled
//! towards the teacher's at paired blocks, through a learned linear projection when the widths
//! differ. The losses are DistillKit's `hs_mse` / `hs_cosine` (mean over pairs of a masked
//! mean over tokens), the intermediate-state loss of Minitron-style depth/width distillation.

use std::fmt;

use burn::tensor::{DType, Tensor};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::as_dtype;
pub use crate::model::hidden_proj::HiddenProjection;
use crate::util::accumulate;

/// The recipe's hidden-state section. `weight = 0` (the default) turns the loss off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HiddenSection {
    pub weight: f64,
    pub pairs: LayerPairs,
    pub loss: HiddenLoss,
}

impl Default for HiddenSection {
    fn default() -> Self {
        HiddenSection { weight: 0.0, pairs: LayerPairs::Uniform, loss: HiddenLoss::Mse }
    }
}

/// Which student block outputs are compared with which teacher block outputs (0-based block
/// indices: the output of block `i`). In TOML either `"uniform"` or an array of
/// `[student_layer, teacher_layer]` pairs. Note that DistillKit and transformers count the
/// embedding output as hidden state 0, so their index `i` is our block `i - 1`.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum LayerPairs {
    /// Every student block, each with the teacher block at the same relative depth
    /// (see [`resolve_pairs`]).
    #[default]
    Uniform,
    Explicit(Vec<[usize; 2]>),
}

impl Serialize for LayerPairs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LayerPairs::Uniform => s.serialize_str("uniform"),
            LayerPairs::Explicit(pairs) => {
                let mut seq = s.serialize_seq(Some(pairs.len()))?;
                for p in pairs {
                    seq.serialize_element(p)?;
                }
                seq.end()
            }
        }
    }
}

// By hand rather than `#[serde(untagged)]`: untagged can read neither a unit variant from the
// string "uniform" nor say what went wrong ("did not match any variant").
impl<'de> Deserialize<'de> for LayerPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LayerPairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"uniform\" or an array of [student_layer, teacher_layer] pairs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LayerPairs, E> {
                match v {
                    "uniform" => Ok(LayerPairs::Uniform),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LayerPairs, A::Error> {
                let mut pairs = Vec::new();
                // As vectors: serde's `[usize; 2]` stops after two numbers and toml does not
                // complain about a third, so `[1, 2, 3]` would read as `[1, 2]`.
                while let Some(p) = seq.next_element::<Vec<usize>>()? {
                    let &[a, b] = &p[..] else {
                        return Err(de::Error::custom(format!("pair {p:?}: expected [student_layer, teacher_layer]")));
                    };
                    pairs.push([a, b]);
                }
                Ok(LayerPairs::Explicit(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HiddenLoss {
    /// Per token, the mean over channels of the squared difference.
    #[default]
    Mse,
    /// Per token, `1 - cos(student, teacher)`: blind to the scale of the residual stream.
    Cosine,
}

/// The `(student_layer, teacher_layer)` pairs, 0-based block outputs.
///
/// `Uniform` takes every student block `i` and pairs it with teacher block
/// `round((i + 1) * T / S) - 1` (halves rounded up; at least block 0 when the student is the
/// deeper one): the same relative depth, so the last student block pairs with the last teacher
/// block, and with `S = T` it is the identity (DistillKit's `layer_mapping = "all"`, which needs
/// equal depths). Explicit pairs are checked against the layer counts, and may not be empty or
/// repeat a pair.
pub fn resolve_pairs(
    pairs: &LayerPairs,
    student_layers: usize,
    teacher_layers: usize,
) -> Result<Vec<(usize, usize)>, String> {
    let (s, t) = (student_layers, teacher_layers);
    if s == 0 || t == 0 {
        return Err(format!("hidden-state pairs need blocks: the student has {s}, the teacher {t}"));
    }
    let explicit = match pairs {
        // round(x) = floor(x + 1/2), in integers: floor((2 (i + 1) T + S) / 2S).
        LayerPairs::Uniform => return Ok((0..s).map(|i| (i, ((2 * (i + 1) * t + s) / (2 * s)).max(1) - 1)).collect()),
        LayerPairs::Explicit(p) => p,
    };
    if explicit.is_empty() {
        return Err("`pairs` is empty: give \"uniform\" or at least one [student_layer, teacher_layer] pair".into());
    }
    for (k, &[a, b]) in explicit.iter().enumerate() {
        if a >= s {
            return Err(format!("pair [{a}, {b}]: the student has {s} layers (0..{s}), no layer {a}"));
        }
        if b >= t {
            return Err(format!("pair [{a}, {b}]: the teacher has {t} layers (0..{t}), no layer {b}"));
        }
        if explicit[..k].contains(&[a, b]) {
            return Err(format!("pair [{a}, {b}] is listed twice"));
        }
    }
    Ok(explicit.iter().map(|&[a, b]| (a, b)).collect())
}

/// torch's `cosine_similarity` default: the norms' product is kept at least this.
const COS_EPS: f64 = 1e-8;

/// The hidden-state loss: the mean over pairs `k` of the weighted mean over tokens of
///
/// - `Mse`: `mean_c (P_k(s) - t)^2`,
/// - `Cosine`: `1 - (P_k(s) . t) / max(|P_k(s)| |t|, 1e-8)`,
///
/// where `student[k]`, `teacher[k]` are `(batch, seq, d)` and `mask` is `(batch * seq)`, the
/// tokens' weights as the logit loss takes them (1 real, 0 padding, fractional under a
/// curriculum): `sum_i w_i L_i / sum_i w_i`. The teacher's states are constants (a frozen model):
/// no gradient reaches them. Computed in f32 whatever the dtypes of the inputs.
pub fn hidden_loss(
    student: &[Tensor<3>],
    teacher: &[Tensor<3>],
    proj: &HiddenProjection,
    mask: Tensor<1>,
    loss: HiddenLoss,
) -> Tensor<1> {
    assert_eq!(student.len(), teacher.len(), "one teacher hidden state per student hidden state");
    if let Some(maps) = &proj.maps {
        assert_eq!(maps.len(), student.len(), "one projection per layer pair");
    }
    // As the logit loss: the denominator only kept away from zero, never clamped to 1.
    let count = mask.clone().sum().clamp_min(f32::MIN_POSITIVE as f64);
    let mut total = None;
    for (k, (s, t)) in student.iter().zip(teacher).enumerate() {
        let [b, l, _] = s.dims();
        let n = b * l;
        assert_eq!(mask.dims(), [n], "mask: one weight per token");
        let p = proj.project(k, s.clone());
        let d = p.dims()[2];
        assert_eq!(t.dims(), [b, l, d], "pair {k}: teacher states vs projected student states");
        let p = p.reshape([n, d]);
        let t = as_dtype(t.clone().inner(), DType::F32).reshape([n, d]);
        let per_token = match loss {
            HiddenLoss::Mse => (p - t).square().mean_dim(1),
            HiddenLoss::Cosine => {
                let dot = (p.clone() * t.clone()).sum_dim(1);
                // max(|p| |t|, eps) as sqrt(max(|p|^2 |t|^2, eps^2)): the same value, and no
                // infinite derivative of a square root at a zero vector.
                let norms = (p.square().sum_dim(1) * t.square().sum_dim(1)).clamp_min(COS_EPS * COS_EPS).sqrt();
                (dot / norms).neg() + 1.0
            }
        };
        accumulate(&mut total, (per_token.squeeze_dim::<1>(1) * mask.clone()).sum());
    }
    match total {
        Some(total) => total / count / student.len() as f64,
        None => Tensor::zeros([1], &mask.device()),
    }
}
