//! The teacher cache's rows of the next micro-batch, decoded on another thread while this one
//! trains.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::teacher::cache::{CacheReader, TopKHost};
use crate::teacher::codec::TailMode;

/// Decodes the cache rows of the next micro-batch on another thread while this one trains.
pub(super) type Pending = ((Vec<usize>, u64), std::thread::JoinHandle<Result<TopKHost>>);

pub(super) struct ReadAhead {
    pub pending: Option<Pending>,
}

impl ReadAhead {
    fn start(reader: &Arc<CacheReader>, rows: Vec<usize>, tau: f64, tail: TailMode) -> Pending {
        let r = reader.clone();
        let rows2 = rows.clone();
        ((rows, tau.to_bits()), std::thread::spawn(move || r.batch(&rows2, tau, tail)))
    }

    /// The targets of `rows` at `tau`, then start decoding `next`.
    pub fn take(
        &mut self,
        reader: &Arc<CacheReader>,
        rows: &[usize],
        next: Vec<usize>,
        tau: f64,
        tail: TailMode,
    ) -> Result<TopKHost> {
        let got = match self.pending.take() {
            Some(((r, t), h)) if r == rows && t == tau.to_bits() => {
                h.join().map_err(|_| Error::runtime("teacher-cache reader thread panicked"))?
            }
            _ => reader.batch(rows, tau, tail),
        };
        self.pending = Some(Self::start(reader, next, tau, tail));
        got
    }
}
