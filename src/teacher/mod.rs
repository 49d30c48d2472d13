//! Frozen teachers from outside our own runs.

pub mod hf;
pub mod bits;
pub mod cache;
pub mod codec;
