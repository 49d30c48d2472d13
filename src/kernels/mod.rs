//! Our fast paths behind the model's seams (the linear layers, attention, the KD loss, the
//! optimizer's update), one backend route per module, each beside a test against the reference
//! path it replaces. The reference paths stay where the model defines them and remain the
//! default on every backend a route does not cover.

#[cfg(feature = "tch")]
pub mod torch;

pub mod cpu;
