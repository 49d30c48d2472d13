//! A cache's bytes: one token's record (its kept ids as Rice-coded gaps, its values by codec),
//! a shard (header, offset table, records, checksum) and the manifest, plus the structural
//! checks a shard passes before anything is read from it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CacheIdentity, FileStamp};
use crate::error::{Error, Result};
use crate::teacher::bits::{BitReader, BitWriter, best_rice, get_rice, put_rice};
use crate::teacher::codec::ValueCodec;
use crate::util::read_json;

/// 2: the teacher's dtype in the identity; ties at the k-th value keep the lower ids.
pub const FORMAT_VERSION: u32 = 2;
pub(super) const MAGIC: &[u8; 8] = b"DSTLTOPK";
pub(super) const MANIFEST: &str = "cache.json";
/// Log of the teacher's tail mass when the kept entries hold (numerically) all of it.
pub(super) const EMPTY_TAIL: f32 = -60.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub first_row: usize,
    pub rows: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// The teacher's loss over the held-out split, evaluated when the cache was built (with the
/// run's batch size then; another batch size sums the same per-token losses in another f32
/// order), so a cached run reports it without the teacher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldOut {
    /// `data_hash` of the held-out split it was evaluated on.
    pub valid_hash: String,
    pub batch_size: usize,
    pub loss: f64,
    pub tokens: usize,
}

/// What a run needs of the teacher besides its logits, recorded at build time.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TeacherRecord {
    /// The teacher as the recipe named it: kind and path.
    pub source: String,
    pub files: Vec<FileStamp>,
    pub matmul_params: usize,
    pub held_out: Option<HeldOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub id: CacheIdentity,
    pub tokens: u64,
    /// Real positions not stored because their targets are out of the loss (chat prompts,
    /// document boundaries); 0 in caches written before.
    #[serde(default)]
    pub skipped: u64,
    pub bytes: u64,
    pub shards: Vec<ShardInfo>,
    #[serde(default)]
    pub teacher: TeacherRecord,
}

/// A cache's manifest, unchecked (`CacheReader::open` checks it against a run).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    read_json(&dir.join(MANIFEST))
}

impl Manifest {
    pub fn bytes_per_token(&self) -> f64 {
        self.bytes as f64 / self.tokens.max(1) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// One token's record.

/// One token's kept entries, as decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTopK {
    /// Ascending.
    pub ids: Vec<u32>,
    /// Raw teacher logits of `ids` (as stored: rounded or quantized).
    pub logits: Vec<f32>,
    /// Full-vocabulary log-sum-exp at each of the identity's temperatures.
    pub lse: Vec<f32>,
    /// Log of the teacher's probability mass outside `ids` at each temperature, computed from
    /// the exact logits at write time (recomputing it from rounded kept logits would turn
    /// their rounding error into tail mass).
    pub log_tail: Vec<f32>,
}

/// One token's selection, before coding: everything its record stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The kept ids, ascending.
    pub ids: Vec<u32>,
    /// Their exact logits.
    pub kept: Vec<f32>,
    /// The largest logit.
    pub top: f32,
    /// Per stored temperature: the full-vocabulary log-sum-exp of z / tau, and the log of the
    /// teacher's probability outside `ids` (f64 until coded).
    pub lse: Vec<f64>,
    pub log_tail: Vec<f64>,
}

/// Append one token's record.
pub fn encode_selected(w: &mut BitWriter, s: &Selected, codec: ValueCodec) {
    for (&lse, &lt) in s.lse.iter().zip(&s.log_tail) {
        w.put((lse as f32).to_bits(), 32);
        w.put(half::f16::from_f64(lt.max(EMPTY_TAIL as f64)).to_bits() as u32, 16);
    }
    let lo = s.kept.iter().cloned().fold(f32::INFINITY, f32::min);
    let top = s.top;
    let range = top - lo;
    if codec.levels().is_some() {
        w.put(top.to_bits(), 32);
        w.put(range.to_bits(), 32);
    }
    let mut gaps = Vec::with_capacity(s.ids.len());
    let mut prev: i64 = -1;
    for &i in &s.ids {
        gaps.push((i as i64 - prev - 1) as u32);
        prev = i as i64;
    }
    let r = best_rice(&gaps);
    w.put(r, 5);
    for &g in &gaps {
        put_rice(w, g, r);
    }
    for &x in &s.kept {
        match codec {
            ValueCodec::F16 => w.put(half::f16::from_f32(x).to_bits() as u32, 16),
            ValueCodec::Bf16 => w.put(half::bf16::from_f32(x).to_bits() as u32, 16),
            _ => {
                let levels = codec.levels().expect("quantized");
                let q = if range > 0.0 {
                    (((top - x) / range).clamp(0.0, 1.0).sqrt() * levels as f32).round() as u32
                } else {
                    0
                };
                w.put(q, codec.bits());
            }
        }
    }
}

pub fn decode_token(
    rd: &mut BitReader,
    k: usize,
    codec: ValueCodec,
    n_temps: usize,
    vocab: usize,
) -> Option<TokenTopK> {
    let (mut lse, mut log_tail) = (Vec::with_capacity(n_temps), Vec::with_capacity(n_temps));
    for _ in 0..n_temps {
        lse.push(f32::from_bits(rd.get(32)?));
        log_tail.push(half::f16::from_bits(rd.get(16)? as u16).to_f32());
    }
    let (top, range) = match codec.levels() {
        Some(_) => (f32::from_bits(rd.get(32)?), f32::from_bits(rd.get(32)?)),
        None => (0.0, 0.0),
    };
    let r = rd.get(5)?;
    let mut ids = Vec::with_capacity(k);
    let mut prev: i64 = -1;
    for _ in 0..k {
        let id = prev + 1 + get_rice(rd, r)? as i64;
        if id as usize >= vocab {
            return None;
        }
        ids.push(id as u32);
        prev = id;
    }
    let mut logits = Vec::with_capacity(k);
    for _ in 0..k {
        logits.push(match codec {
            ValueCodec::F16 => half::f16::from_bits(rd.get(16)? as u16).to_f32(),
            ValueCodec::Bf16 => half::bf16::from_bits(rd.get(16)? as u16).to_f32(),
            _ => {
                let u = rd.get(codec.bits())? as f32 / codec.levels().expect("quantized") as f32;
                top - range * u * u
            }
        });
    }
    Some(TokenTopK { ids, logits, lse, log_tail })
}

// ---------------------------------------------------------------------------------------------
// Writing.

pub(super) fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.bin")
}

pub(super) fn shard_bytes(id: &CacheIdentity, first_row: usize, rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(FORMAT_VERSION.to_le_bytes());
    out.extend(id.digest());
    out.extend((first_row as u64).to_le_bytes());
    out.extend((rows.len() as u64).to_le_bytes());
    let mut off = 0u64;
    for r in rows {
        out.extend(off.to_le_bytes());
        off += r.len() as u64;
    }
    out.extend(off.to_le_bytes());
    for r in rows {
        out.extend(r);
    }
    let sum: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&out).into()
    };
    out.extend(sum);
    out
}

pub(super) const HEADER: usize = 8 + 4 + 32 + 8 + 8;

#[cfg(test)]
thread_local! {
    /// Bytes this thread has put through SHA-256 while opening shards (tests count passes).
    pub(crate) static HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_hashed(_n: usize) {
    #[cfg(test)]
    HASHED.with(|h| h.set(h.get() + _n as u64));
}

/// Parse and verify one shard's bytes in one SHA-256 pass; returns (first row, row count, the
/// SHA-256 of the whole file, which the manifest lists). Every size and offset read from the
/// file is checked against the file's length before anything is computed or sliced from it.
pub(super) fn check_shard(bytes: &[u8], id: &CacheIdentity, path: &Path) -> Result<(u64, usize, String)> {
    use sha2::{Digest, Sha256};
    let bad = |why: &str| {
        Error::input(format!(
            "{}: corrupt teacher-cache shard ({why}); delete the cache directory and rebuild it with `distill cache-teacher`",
            path.display()
        ))
    };
    if bytes.len() < HEADER + 8 + 32 || &bytes[..8] != MAGIC {
        return Err(bad("not a shard file or truncated"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    count_hashed(bytes.len());
    // The trailer covers the body; the manifest's digest covers body + trailer: one pass
    // gives both (the hasher's state is cloned at the end of the body).
    let mut h = Sha256::new();
    h.update(body);
    let want: [u8; 32] = h.clone().finalize().into();
    if sum != want {
        return Err(bad("checksum mismatch"));
    }
    h.update(sum);
    let file_sha = format!("{:x}", h.finalize());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(bad(&format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    if bytes[12..44] != id.digest() {
        return Err(bad("it belongs to a different cache"));
    }
    let (first, rows) = (u64_at(44), u64_at(52));
    // rows + 1 offsets must fit in the body (compared in u64, before any arithmetic on rows
    // that could overflow).
    let fit = ((body.len() - HEADER) / 8) as u64;
    if rows >= fit {
        return Err(bad(&format!("an offset table of {rows} + 1 entries does not fit in {} bytes", body.len())));
    }
    let rows = rows as usize;
    let base = HEADER + 8 * (rows + 1);
    let records = (body.len() - base) as u64;
    // Offsets start at 0, never decrease, and the last one ends the records exactly.
    let mut prev = 0u64;
    for i in 0..=rows {
        let o = u64_at(HEADER + 8 * i);
        if (i == 0 && o != 0) || o < prev || o > records || (i == rows && o != records) {
            return Err(bad(&format!(
                "row offset {i} is {o}; expected offsets from 0, non-decreasing, ending at the records' size {records}"
            )));
        }
        prev = o;
    }
    Ok((first, rows, file_sha))
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::teacher::bits::BitReader;
    use crate::teacher::cache::test_fixture::ident;
    use proptest::prelude::*;

    fn cases() -> u32 {
        std::env::var("DISTILL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
    }

    /// The body of a valid shard of three records, mutated, with its trailer recomputed so
    /// that the parse goes past the checksum into the header and the offset table.
    fn resealed(edits: &[(usize, u64)]) -> Vec<u8> {
        let id = ident(4, ValueCodec::Q8, 3, "d");
        let mut b = shard_bytes(&id, 6, &[vec![1; 10], vec![2; 7], vec![3; 12]]);
        b.truncate(b.len() - 32);
        for &(at, w) in edits {
            let at = at % (b.len() - 7);
            b[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        use sha2::{Digest, Sha256};
        let sum: [u8; 32] = Sha256::digest(&b).into();
        b.extend(sum);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// Crafted sizes and offsets (the first row, the row count, each offset) behind a valid
        /// checksum: an error naming the shard, or a consistent table, never a panic or a
        /// huge allocation.
        #[test]
        fn shard_header_and_offsets(
            edits in proptest::collection::vec(
                (0usize..200, prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 61), any::<u64>(), 0u64..64]),
                1..4,
            )
        ) {
            let id = ident(4, ValueCodec::Q8, 3, "d");
            let b = resealed(&edits);
            match check_shard(&b, &id, Path::new("s.bin")) {
                Ok((_, rows, _)) => prop_assert!(rows <= b.len() / 8),
                Err(e) => prop_assert!(e.exit_code() == 2 && e.to_string().starts_with("s.bin: corrupt"), "{e}"),
            }
        }

        /// A token record of random bits: decoded or refused (`None`), ids inside the
        /// vocabulary, never a panic.
        #[test]
        fn token_records(bytes in proptest::collection::vec(any::<u8>(), 0..96), k in 1usize..40, codec in 0usize..5) {
            let codec = [ValueCodec::F16, ValueCodec::Bf16, ValueCodec::Q8, ValueCodec::Q6, ValueCodec::Q4][codec];
            let mut rd = BitReader::new(&bytes);
            if let Some(t) = decode_token(&mut rd, k, codec, 2, 300) {
                prop_assert!(t.ids.len() == k && t.ids.iter().all(|&i| i < 300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;
    use crate::teacher::cache::encode_token;

    #[test]
    fn token_records_round_trip_for_every_codec() {
        let mut rng = SplitMix(3);
        let v = 700;
        let z: Vec<f32> = (0..v).map(|_| (rng.uniform() * 20.0 - 8.0) as f32).collect();
        for codec in [ValueCodec::F16, ValueCodec::Bf16, ValueCodec::Q8, ValueCodec::Q6, ValueCodec::Q4] {
            for k in [1, 8, 64, v] {
                let mut w = BitWriter::default();
                encode_token(&mut w, &z, k, codec, &[1.0, 2.0]);
                w.align();
                let t = decode_token(&mut BitReader::new(&w.bytes), k, codec, 2, v).expect("decodes");
                // The k largest, in id order.
                let mut order: Vec<usize> = (0..v).collect();
                order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
                let mut want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
                want.sort();
                assert_eq!(t.ids, want, "{codec:?} k={k}");
                let top = z[order[0]];
                let range = top - z[order[k - 1]];
                for (&i, &x) in t.ids.iter().zip(&t.logits) {
                    let err = (x - z[i as usize]).abs();
                    // f16: 11 significant bits; bf16: 8; q<b>: the largest step of the sqrt
                    // code, 2 * range / levels, halved.
                    let bound = match codec {
                        ValueCodec::F16 => z[i as usize].abs() / 2048.0,
                        ValueCodec::Bf16 => z[i as usize].abs() / 256.0,
                        _ => range / codec.levels().unwrap() as f32 + 1e-6,
                    };
                    assert!(err <= bound + 1e-6, "{codec:?} k={k}: {x} vs {} (bound {bound})", z[i as usize]);
                }
                for (j, tau) in [1.0f64, 2.0].iter().enumerate() {
                    let want = {
                        let m = z.iter().map(|&x| x as f64 / tau).fold(f64::NEG_INFINITY, f64::max);
                        m + z.iter().map(|&x| (x as f64 / tau - m).exp()).sum::<f64>().ln()
                    };
                    assert!((t.lse[j] as f64 - want).abs() < 1e-5);
                    let tail: f64 = (0..v)
                        .filter(|i| !t.ids.contains(&(*i as u32)))
                        .map(|i| (z[i] as f64 / tau - want).exp())
                        .sum();
                    if k == v {
                        assert_eq!(t.log_tail[j], -60.0);
                    } else {
                        assert!(
                            (t.log_tail[j] as f64 - tail.ln()).abs() < 2e-3 * tail.ln().abs(),
                            "tail {} vs {}",
                            t.log_tail[j],
                            tail.ln()
                        );
                    }
                }
            }
        }
    }
}
