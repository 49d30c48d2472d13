//! The teacher cache's rows of the next micro-batch, decoded on another thread while this one
//! trains.

use std::sync::Arc;

use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::teacher::cache::{CacheReader, TopKHost};
use crate::teacher::codec::TailMode;

/// The positions of `rows` the cache holds (those in the loss).
fn keep(data: &Packed, rows: &[usize]) -> Vec<Vec<usize>> {
    rows.iter().map(|&r| data.loss_positions(r)).collect()
}

/// Decodes the cache rows of the next micro-batch on another thread while this one trains.
pub(super) type Pending = ((Vec<usize>, u64), std::thread::JoinHandle<Result<TopKHost>>);

pub(super) struct ReadAhead {
    pub pending: Option<Pending>,
}

impl ReadAhead {
    fn start(reader: &Arc<CacheReader>, data: &Packed, rows: Vec<usize>, tau: f64, tail: TailMode) -> Pending {
        let r = reader.clone();
        let rows2 = rows.clone();
        let keep = keep(data, &rows);
        ((rows, tau.to_bits()), std::thread::spawn(move || r.batch(&rows2, &keep, tau, tail)))
    }

    /// The targets of `rows` at `tau`, then start decoding `next`.
    pub fn take(
        &mut self,
        reader: &Arc<CacheReader>,
        data: &Packed,
        rows: &[usize],
        next: Vec<usize>,
        tau: f64,
        tail: TailMode,
    ) -> Result<TopKHost> {
        let got = match self.pending.take() {
            Some(((r, t), h)) if r == rows && t == tau.to_bits() => {
                h.join().map_err(|_| Error::runtime("teacher-cache reader thread panicked"))?
            }
            _ => reader.batch(rows, &keep(data, rows), tau, tail),
        };
        self.pending = Some(Self::start(reader, data, next, tau, tail));
        got
    }
}
