//! The frozen teacher as the layers above use it: the Hugging Face seam ([`hf`]), its offline
//! top-k cache ([`cache`], with [`codec`] for the stored values), the kinds and `[cache]`
//! section a recipe chooses from ([`config`]), how the trainer sees it ([`TeacherSource`]), and
//! the per-row loss every row scorer shares ([`row_nll`]). Getting the teacher a recipe names
//! (loading, the pretraining handoff, its identity) and a run's use of its cache read the whole
//! recipe, so they live in the pipeline (`pipeline/teacher.rs`, `pipeline/cached.rs`).

pub mod bits;
pub mod cache;
pub mod codec;
pub mod config;
pub mod gguf_tokenizer;
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
