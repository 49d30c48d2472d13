//! The frozen teacher: where it comes from (a Hugging Face folder, one of our checkpoints, or
//! this run's own pretraining: [`Teacher`]), who it is (a hash of its files, recorded in its
//! cache), its offline top-k cache ([`cache`], and [`cached`] for a run's use of it), how the
//! trainer sees it ([`TeacherSource`]), and the per-row loss every row scorer shares
//! ([`row_nll`]).

pub mod bits;
pub mod cache;
pub mod codec;
pub mod config;
pub mod hf;
mod nll;

use std::sync::Arc;

pub use nll::{doc_ppl, row_nll};

use crate::model::Decoder;
use crate::teacher::codec::TailMode;
use cache::CacheReader;

/// The teacher's side of the loss.
pub enum TeacherSource<'a> {
    /// Hard labels only.
    None,
    /// The frozen teacher (on the plain device), run per batch with no autodiff graph.
    Online(&'a Decoder),
    /// Top-k logits streamed from an offline cache, decoded one micro-batch ahead.
    Cache { reader: Arc<CacheReader>, tail: TailMode },
}

impl TeacherSource<'_> {
    pub fn is_some(&self) -> bool {
        !matches!(self, TeacherSource::None)
    }
}
