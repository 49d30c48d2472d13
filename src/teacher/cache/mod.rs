//! The offline teacher: its top-k logits per training token, computed once and streamed from
//! disk for any number of student runs.
//!
//! Layout of a cache directory:
//! - `shard-NNNNN.bin`: a fixed header (magic, version, identity digest, first row, rows), a
//!   table of `rows + 1` little-endian u64 byte offsets, one bit-packed record per row, and a
//!   SHA-256 of everything before it. A shard is written to a temporary name and renamed, so
//!   one that exists is whole; an interrupted build keeps its finished shards.
//! - `cache.json` (written last): the identity (format version, vocabulary, k, value codec,
//!   temperatures, seq_len, rows, tokenizer / teacher / teacher dtype / data hashes), each
//!   shard's checksum, and the teacher's record (how the recipe named it, its files' sizes and
//!   times, its size and held-out loss), so a run on the cache needs no teacher.
//! - `tokenizer.json`: the teacher's, for data preparation when its folder is gone.
//!
//! A row record holds its real token count (u32), then per token: at each stored temperature
//! the log-sum-exp of the full vocabulary (f32) and the log of the teacher's mass outside the
//! kept entries (f16, floored at -60), for quantized codecs the top logit and the
//! range of the kept logits (f32), the Rice parameter (5 bits), the kept ids in ascending order
//! as Rice-coded gaps, and their values: raw f16 / bf16 logits, or `q<b>`, b-bit codes of
//! `sqrt((max - z) / range)` (finer near the top, where the probability mass is).
//!
//! The files follow that split: `format` (the record and its codecs, the shard header, the
//! manifest, the structural checks), `build` (running the teacher and selecting its top k on
//! the device, writing shards), `reader` ([`CacheReader`]: opening, checking, decoding rows);
//! here the cache's identity (what it was made from: hashes of data, tokenizer, teacher files).

mod build;
mod format;
mod reader;

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::teacher::codec::ValueCodec;

pub use build::{
    BuildOptions, Launched, Pending, Selections, build, decoder_logits, decoder_select, encode_token, host_select,
    select_host,
};
pub use format::{
    FORMAT_VERSION, HeldOut, Manifest, Selected, ShardInfo, TeacherRecord, TokenTopK, decode_token, encode_selected,
    read_manifest,
};
pub use reader::{CacheReader, Expect, TopKHost, divergence_online_and_cached};

/// What a cache was made from and how; two caches with equal identities are interchangeable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheIdentity {
    pub format_version: u32,
    pub vocab_size: usize,
    pub k: usize,
    pub values: ValueCodec,
    /// Temperatures whose full-vocabulary log-sum-exp is stored per token.
    pub temperatures: Vec<f64>,
    pub seq_len: usize,
    pub n_rows: usize,
    pub rows_per_shard: usize,
    pub tokenizer_hash: String,
    pub teacher_hash: String,
    /// `teacher.dtype`: a half-precision teacher's logits differ from its f32 ones.
    pub teacher_dtype: String,
    pub data_hash: String,
}

impl CacheIdentity {
    pub(super) fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(serde_json::to_string(self).expect("serializable").as_bytes()).into()
    }
    pub(super) fn n_shards(&self) -> usize {
        self.n_rows.div_ceil(self.rows_per_shard)
    }
}

/// Size and modification time of one of the teacher's files, as hashed into `teacher_hash`: a
/// cheap check that a teacher still on disk is the one the cache was made from (a run hashes
/// the files again only when these differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileStamp {
    pub file: String,
    pub bytes: u64,
    pub modified_ns: u64,
}

/// Stamps of `files`, or `None` if one of them cannot be read (the teacher is gone).
pub fn stamps(files: &[PathBuf]) -> Option<Vec<FileStamp>> {
    files
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(FileStamp { file: p.display().to_string(), bytes: m.len(), modified_ns: t.as_nanos() as u64 })
        })
        .collect()
}

/// Hash of a data split as rows of `seq_len` see it.
pub fn data_hash(data: &Packed, seq_len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    data.hash_into(&mut h);
    h.update((seq_len as u64).to_le_bytes());
    format!("{:x}", h.finalize())
}

/// SHA-256 over the contents of `files` (in the given order), streamed.
pub fn hash_files(files: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let mut f = crate::error::open_regular(p)?;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update(b"\0file\0");
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
/// A small cache's ingredients (data, teacher and student logits) shared by the tests of
/// every file here and of the curriculum's cached scores.
pub(crate) mod test_fixture {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::rng::SplitMix;

    pub const V: usize = 300;
    pub const T: usize = 16;

    /// Peaked, LM-like logits: a few strong candidates over a Gaussian-ish background.
    fn logits(seed: u64, rows: usize) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        let mut out = Vec::with_capacity(rows * T * V);
        for _ in 0..rows * T {
            let hot: Vec<usize> = (0..4).map(|_| rng.below(V)).collect();
            for j in 0..V {
                let g = (rng.uniform() + rng.uniform() + rng.uniform() - 1.5) * 2.0;
                let boost = if hot.contains(&j) { 6.0 + rng.uniform() * 3.0 } else { 0.0 };
                out.push((g + boost) as f32);
            }
        }
        out
    }

    pub fn ident(k: usize, values: ValueCodec, n_rows: usize, data_hash: &str) -> CacheIdentity {
        CacheIdentity {
            format_version: FORMAT_VERSION,
            vocab_size: V,
            k,
            values,
            temperatures: vec![1.0, 2.0],
            seq_len: T,
            n_rows,
            rows_per_shard: 3,
            tokenizer_hash: "tok".into(),
            teacher_hash: "teacher".into(),
            teacher_dtype: "f32".into(),
            data_hash: data_hash.into(),
        }
    }

    pub fn expect(id: &CacheIdentity) -> Expect<'_> {
        Expect {
            vocab_size: V,
            seq_len: T,
            n_rows: id.n_rows,
            tokenizer_hash: &id.tokenizer_hash,
            teacher_hash: &id.teacher_hash,
            teacher_dtype: &id.teacher_dtype,
            data_hash: &id.data_hash,
        }
    }

    pub struct Fixture {
        pub data: Packed,
        pub teacher: Vec<f32>,
        pub student: Vec<f32>,
        pub rows: Vec<usize>,
    }

    pub fn fixture() -> Fixture {
        // 7 rows, the last one short (padded).
        let n_tokens = 6 * T + 9 + 1;
        let mut rng = SplitMix(1);
        let data = Packed::new((0..n_tokens).map(|_| rng.below(V) as u32).collect::<Vec<u32>>(), T, 0);
        let rows: Vec<usize> = (0..data.n_rows()).collect();
        Fixture { teacher: logits(11, rows.len()), student: logits(12, rows.len()), data, rows }
    }

    pub fn build_cache(f: &Fixture, dir: &Path, k: usize, values: ValueCodec) -> Manifest {
        let id = ident(k, values, f.data.n_rows(), "data");
        let stop = AtomicBool::new(false);
        let teacher = f.teacher.clone();
        let logits_of =
            move |rows: &[usize]| rows.iter().flat_map(|&r| teacher[r * T * V..(r + 1) * T * V].to_vec()).collect();
        build(
            dir,
            &id,
            &f.data,
            host_select(logits_of, &f.data, &id),
            &BuildOptions { batch_size: 2, quiet: true, stop: &stop, teacher: Default::default() },
        )
        .expect("build")
    }

    pub fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("distill-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
