//! Frozen teachers from outside our own runs.

pub mod hf;
