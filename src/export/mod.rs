//! Exports of a trained student. One file per format.

pub mod native;
