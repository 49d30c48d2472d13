//! `distill`: distill a large language model into a small one from one TOML recipe.
//!
//! Data flows one way: [`recipe`] -> [`data`] -> teacher ([`model`], frozen) -> student
//! ([`model`]) -> [`kd_loss`] -> [`train`] -> [`eval`] / [`quant`] / [`export`]; [`pipeline`]
//! runs the stages in that order.
//!
//! Imports only go downwards (README "Layout"): a module below [`recipe`] never names it; it
//! takes its own section types (kept next to it) and the pipeline hands them over.

// burn's `slice` takes one range per dimension as an array: `[a..b]` on a 1-D tensor is that
// array, not the mistaken `vec![a..b]` this lint looks for.
#![allow(clippy::single_range_in_vec_init)]

pub mod bench;
pub mod curriculum;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod kd_loss;
pub mod kernels;
pub mod model;
pub mod on_policy;
pub mod pipeline;
pub mod profile;
pub mod quant;
pub mod recipe;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod speculative;
pub mod synth;
pub mod teacher;
pub mod train;
pub mod util;

#[cfg(test)]
mod fuzz_tests;

pub use error::{Error, Result};
pub mod cli;
