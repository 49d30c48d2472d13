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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::bits::{BitReader, BitWriter, best_rice, get_rice, put_rice};
use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::recipe::{TailMode, ValueCodec};
use crate::util::{read_json, sha256_hex, write_atomic, write_json_atomic};

/// 2: the teacher's dtype in the identity; ties at the k-th value keep the lower ids.
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"DSTLTOPK";
const MANIFEST: &str = "cache.json";
/// Log of the teacher's tail mass when the kept entries hold (numerically) all of it.
const EMPTY_TAIL: f32 = -60.0;

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
    fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(serde_json::to_string(self).expect("serializable").as_bytes()).into()
    }
    fn n_shards(&self) -> usize {
        self.n_rows.div_ceil(self.rows_per_shard)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub first_row: usize,
    pub rows: usize,
    pub bytes: u64,
    pub sha256: String,
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
    files.iter().map(|p| {
        let m = std::fs::metadata(p).ok()?;
        let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(FileStamp { file: p.display().to_string(), bytes: m.len(), modified_ns: t.as_nanos() as u64 })
    }).collect()
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
    pub bytes: u64,
    pub shards: Vec<ShardInfo>,
    #[serde(default)]
    pub teacher: TeacherRecord,
}

/// A cache's manifest, unchecked (`CacheReader::open` checks it against a run).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    read_json(&dir.join(MANIFEST))
}

/// The teacher's tokenizer.json: in its folder, or, for a cached teacher whose folder is gone,
/// the copy its cache keeps (so such a run can still prepare its data).
pub fn teacher_tokenizer(recipe: &crate::recipe::Recipe) -> PathBuf {
    let own = recipe.teacher.path.as_ref().expect("validated").join("tokenizer.json");
    let copy = recipe.cache_dir().join("tokenizer.json");
    if !own.is_file() && recipe.teacher.logits == crate::recipe::LogitsSource::Cache && copy.is_file() { copy } else { own }
}

impl Manifest {
    pub fn bytes_per_token(&self) -> f64 {
        self.bytes as f64 / self.tokens.max(1) as f64
    }
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
        let mut f = std::fs::File::open(p).map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
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

/// The kept set is the k largest logits; ties at the k-th value keep the lower ids. Values
/// compare as IEEE numbers (-0 and +0 tie). A rule, not an algorithm's accident: the device
/// path (any backend's sort) and this host reference agree on it.
fn rank(z: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    z[b as usize].partial_cmp(&z[a as usize]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
}

/// Select one token's record from its full logit row, on the host: the reference the device
/// path is tested against (and what `bench-cache` uses on logits it already holds).
pub fn select_host(z: &[f32], k: usize, temperatures: &[f64]) -> Selected {
    let v = z.len();
    let k = k.min(v);
    let mut idx: Vec<u32> = (0..v as u32).collect();
    if k < v {
        idx.select_nth_unstable_by(k - 1, |&a, &b| rank(z, a, b));
        idx.truncate(k);
    }
    idx.sort_unstable();
    let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let kept: Vec<f32> = idx.iter().map(|&i| z[i as usize]).collect();
    let mut in_top = vec![false; v];
    idx.iter().for_each(|&i| in_top[i as usize] = true);
    let (mut lse, mut log_tail) = (Vec::new(), Vec::new());
    for &tau in temperatures {
        let e = |x: f32| ((x as f64 - max as f64) / tau).exp();
        let all: f64 = z.iter().map(|&x| e(x)).sum();
        lse.push(max as f64 / tau + all.ln());
        // The tail's sum directly, not all - top, which cancels when the tail is small.
        let tail: f64 = z.iter().zip(&in_top).filter(|(_, t)| !**t).map(|(&x, _)| e(x)).sum();
        log_tail.push((tail / all).ln());
    }
    Selected { ids: idx, kept, top: max, lse, log_tail }
}

/// Select, encode and append one token's record from its full logit row.
pub fn encode_token(w: &mut BitWriter, z: &[f32], k: usize, codec: ValueCodec, temperatures: &[f64]) {
    encode_selected(w, &select_host(z, k, temperatures), codec)
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
                let q = if range > 0.0 { (((top - x) / range).clamp(0.0, 1.0).sqrt() * levels as f32).round() as u32 } else { 0 };
                w.put(q, codec.bits());
            }
        }
    }
}

pub fn decode_token(rd: &mut BitReader, k: usize, codec: ValueCodec, n_temps: usize, vocab: usize) -> Option<TokenTopK> {
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

fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.bin")
}

fn shard_bytes(id: &CacheIdentity, first_row: usize, rows: &[Vec<u8>]) -> Vec<u8> {
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

const HEADER: usize = 8 + 4 + 32 + 8 + 8;

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
fn check_shard(bytes: &[u8], id: &CacheIdentity, path: &Path) -> Result<(u64, usize, String)> {
    use sha2::{Digest, Sha256};
    let bad = |why: &str| Error::input(format!(
        "{}: corrupt teacher-cache shard ({why}); delete the cache directory and rebuild it with `distill cache-teacher`",
        path.display()));
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
                "row offset {i} is {o}; expected offsets from 0, non-decreasing, ending at the records' size {records}")));
        }
        prev = o;
    }
    Ok((first, rows, file_sha))
}

/// Options of a cache build that are not part of its identity.
pub struct BuildOptions<'a> {
    pub batch_size: usize,
    pub quiet: bool,
    pub stop: &'a AtomicBool,
    /// Written into the manifest.
    pub teacher: TeacherRecord,
}

/// The teacher's full logits (rows x seq_len x vocab, flat) of given rows, on the host: for
/// `bench-cache`, which compares the cache against them. A cache build never holds these
/// (`decoder_select`).
pub fn decoder_logits<'a>(teacher: &'a Decoder, data: &'a Packed, device: &'a Device) -> impl FnMut(&[usize]) -> Vec<f32> + 'a {
    move |rows| {
        let batch = data.batch(rows, device);
        teacher.forward(batch.inputs).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits")
    }
}

/// Per training row, the selection of each of its real tokens.
pub type Selections = Vec<Vec<Selected>>;

fn non_finite(x: f32, r: usize, p: usize) -> Error {
    Error::runtime(format!("teacher logit {x} at row {r}, position {p}: the teacher produced a non-finite value"))
}

/// The naive way: full logits of the given rows on the host (rows x seq_len x vocab, flat),
/// each token selected there by `select_host`. For logits already on the host (bench-cache)
/// and as the tests' reference.
pub fn host_select<'a>(mut logits_of: impl FnMut(&[usize]) -> Vec<f32> + 'a, data: &'a Packed, id: &CacheIdentity) -> impl FnMut(&[usize]) -> Result<Selections> + 'a {
    let (t, v, k, temps) = (id.seq_len, id.vocab_size, id.k, id.temperatures.clone());
    move |rows| {
        let logits = logits_of(rows);
        rows.iter().enumerate().map(|(j, &r)| (0..data.row_len(r)).map(|p| {
            let z = &logits[(j * t + p) * v..(j * t + p + 1) * v];
            match z.iter().find(|x| !x.is_finite()) {
                Some(&bad) => Err(non_finite(bad, r, p)),
                None => Ok(select_host(z, k, &temps)),
            }
        }).collect()).collect()
    }
}

/// Candidates beyond k pulled from the device, so that ties at the k-th value can be resolved
/// by id on the host; a token whose tie run is longer falls back to its full row.
const TIE_SLACK: usize = 16;

/// The teacher as the cache sees it: it runs on the device, which also takes each token's top
/// k (+ `TIE_SLACK`) and its log-sum-exps; only those come to the host, never the
/// `[batch, seq, vocab]` logits.
pub fn decoder_select<'a>(teacher: &'a Decoder, data: &'a Packed, device: &'a Device, id: &CacheIdentity) -> impl FnMut(&[usize]) -> Result<Selections> + 'a {
    device_select(move |rows: &[usize]| teacher.forward(data.batch(rows, device).inputs), data, id, TIE_SLACK)
}

fn device_select<'a>(mut forward: impl FnMut(&[usize]) -> Tensor<3> + 'a, data: &'a Packed, id: &CacheIdentity, slack: usize) -> impl FnMut(&[usize]) -> Result<Selections> + 'a {
    let (v, k, temps) = (id.vocab_size, id.k.min(id.vocab_size), id.temperatures.clone());
    move |rows| {
        let logits = forward(rows);
        let [b, t, _] = logits.dims();
        let flat = logits.reshape([b * t, v]);
        // Positions per device pass: bounds the f64 copy of their logits to 256 MiB.
        let chunk = ((32usize << 20) / v).max(1);
        let mut out: Selections = rows.iter().map(|&r| Vec::with_capacity(data.row_len(r))).collect();
        let n_real = |j: usize| data.row_len(rows[j]);
        let mut c0 = 0;
        while c0 < b * t {
            let c1 = (c0 + chunk).min(b * t);
            let sel = select_on_device(flat.clone().slice([c0..c1, 0..v]), k, slack, &temps, |i| (rows[(c0 + i) / t], (c0 + i) % t))?;
            for (i, s) in sel.into_iter().enumerate() {
                let (j, p) = ((c0 + i) / t, (c0 + i) % t);
                if p < n_real(j) {
                    out[j].push(s);
                }
            }
            c0 = c1;
        }
        Ok(out)
    }
}

/// Select the records of `n` tokens from their logits `[n, vocab]` on the device.
fn select_on_device(z: Tensor<2>, k: usize, slack: usize, temps: &[f64], at: impl Fn(usize) -> (usize, usize)) -> Result<Vec<Selected>> {
    use burn::tensor::DType;
    let [n, v] = z.dims();
    let kk = (k + slack).min(v);
    let (vals, idx) = z.clone().topk_with_indices(kk, 1);
    let top = vals.clone().slice([0..n, 0..1]);
    let kth = vals.clone().slice([0..n, k - 1..k]).expand([n, v]);
    // The mass strictly below the k-th value is outside the kept set whatever the ties; of
    // the entries equal to it, those not kept are added on the host.
    let below = z.clone().lower(kth.clone());
    let n_eq: Vec<i64> = z.clone().equal(kth).int().sum_dim(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("i64");
    let zd = z.clone().cast(DType::F64) - top.cast(DType::F64).expand([n, v]);
    let (mut all, mut low) = (Vec::new(), Vec::new());
    for &tau in temps {
        let e = zd.clone().div_scalar(tau).exp();
        all.push(e.clone().sum_dim(1).into_data().convert::<f64>().try_to_vec::<f64>().expect("f64"));
        low.push(e.mask_fill(below.clone().bool_not(), 0.0).sum_dim(1).into_data().convert::<f64>().try_to_vec::<f64>().expect("f64"));
    }
    let vals: Vec<f32> = vals.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
    let idx: Vec<i64> = idx.into_data().convert::<i64>().try_to_vec::<i64>().expect("i64");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (cv, ci) = (&vals[i * kk..(i + 1) * kk], &idx[i * kk..(i + 1) * kk]);
        let vk = cv[k - 1];
        // The candidates hold every entry >= the k-th value when one of them is below it.
        if kk < v && cv[kk - 1].partial_cmp(&vk) != Some(std::cmp::Ordering::Less) {
            let row: Vec<f32> = z.clone().slice([i..i + 1, 0..v]).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
            if let Some(&bad) = row.iter().find(|x| !x.is_finite()) {
                let (r, p) = at(i);
                return Err(non_finite(bad, r, p));
            }
            out.push(select_host(&row, k, temps));
            continue;
        }
        let mut c: Vec<(f32, u32)> = cv.iter().cloned().zip(ci.iter().map(|&x| x as u32)).collect();
        c.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        c.truncate(k);
        let top = c[0].0;
        let not_kept_eq = (n_eq[i] as usize).saturating_sub(c.iter().filter(|x| x.0 == vk).count()) as f64;
        if let Some(bad) = c.iter().map(|x| x.0).find(|x| !x.is_finite()).or((!all.iter().all(|a| a[i].is_finite())).then_some(f32::NAN)) {
            let (r, p) = at(i);
            return Err(non_finite(bad, r, p));
        }
        c.sort_by_key(|x| x.1);
        let (mut lse, mut log_tail) = (Vec::new(), Vec::new());
        for (j, &tau) in temps.iter().enumerate() {
            lse.push(top as f64 / tau + all[j][i].ln());
            let tail = low[j][i] + not_kept_eq * ((vk as f64 - top as f64) / tau).exp();
            log_tail.push((tail / all[j][i]).ln());
        }
        out.push(Selected { ids: c.iter().map(|x| x.1).collect(), kept: c.iter().map(|x| x.0).collect(), top, lse, log_tail });
    }
    Ok(out)
}

/// Run the teacher (`select`: the selections of given rows) over every row of `data` and write
/// the cache into `dir` (keeping shards a previous, interrupted build finished). Returns the
/// manifest.
pub fn build(dir: &Path, id: &CacheIdentity, data: &Packed, mut select: impl FnMut(&[usize]) -> Result<Selections>, opts: &BuildOptions) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let total_tokens: u64 = (0..data.n_rows()).map(|r| data.row_len(r) as u64).sum();
    let pb = crate::util::progress_bar("cache", total_tokens, opts.quiet);
    let mut shards = Vec::new();
    let mut tokens = 0u64;
    for s in 0..id.n_shards() {
        let first = s * id.rows_per_shard;
        let rows: Vec<usize> = (first..((s + 1) * id.rows_per_shard).min(id.n_rows)).collect();
        let shard_tokens: u64 = rows.iter().map(|&r| data.row_len(r) as u64).sum();
        let path = dir.join(shard_name(s));
        let existing = std::fs::read(&path).ok().filter(|b| check_shard(b, id, &path).is_ok_and(|(f, n, _)| f == first as u64 && n == rows.len()));
        let bytes = match existing {
            Some(b) => b,
            None => {
                let mut records = Vec::with_capacity(rows.len());
                for chunk in rows.chunks(opts.batch_size.max(1)) {
                    if opts.stop.load(Ordering::SeqCst) {
                        pb.abandon();
                        return Err(Error::Interrupted(format!(
                            "teacher cache stopped after {s} of {} shards (finished shards are kept)", id.n_shards())));
                    }
                    let sel = select(chunk)?;
                    for (toks, &r) in sel.iter().zip(chunk) {
                        let n = data.row_len(r);
                        debug_assert_eq!(toks.len(), n);
                        let mut w = BitWriter::default();
                        w.put(n as u32, 32);
                        for s in toks {
                            encode_selected(&mut w, s, id.values);
                        }
                        w.align();
                        records.push(w.bytes);
                        pb.inc(n as u64);
                    }
                }
                let b = shard_bytes(id, first, &records);
                write_atomic(&path, &b)?;
                b
            }
        };
        if pb.position() < tokens + shard_tokens {
            pb.set_position(tokens + shard_tokens);
        }
        tokens += shard_tokens;
        shards.push(ShardInfo { file: shard_name(s), first_row: first, rows: rows.len(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) });
    }
    pb.finish_and_clear();
    let bytes = shards.iter().map(|s| s.bytes).sum();
    let m = Manifest { id: id.clone(), tokens, bytes, shards, teacher: opts.teacher.clone() };
    write_json_atomic(&dir.join(MANIFEST), &m)?;
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Teacher targets of a batch on the host: `n` positions x `k` entries, ready for the loss.
pub struct TopKHost {
    pub n: usize,
    pub k: usize,
    pub ids: Vec<i64>,
    /// Teacher log-probabilities of the kept ids at the training temperature.
    pub logp: Vec<f32>,
    /// Log of the teacher's remaining mass per position (`tail = "other"` only).
    pub tail: Option<Vec<f32>>,
}

impl TopKHost {
    pub fn to_device(&self, device: &Device) -> crate::kd_loss::TopK {
        crate::kd_loss::TopK {
            ids: Tensor::<2, Int>::from_data(TensorData::new(self.ids.clone(), [self.n, self.k]), device),
            logp: Tensor::from_data(TensorData::new(self.logp.clone(), [self.n, self.k]), device),
            tail: self.tail.as_ref().map(|t| Tensor::from_data(TensorData::new(t.clone(), [self.n]), device)),
        }
    }
}

pub struct CacheReader {
    pub manifest: Manifest,
    dir: PathBuf,
    shards: Vec<memmap2::Mmap>,
}

/// What a cache must match to be used for a run.
pub struct Expect<'a> {
    pub vocab_size: usize,
    pub seq_len: usize,
    pub n_rows: usize,
    pub tokenizer_hash: &'a str,
    pub teacher_hash: &'a str,
    pub teacher_dtype: &'a str,
    pub data_hash: &'a str,
}

impl CacheReader {
    /// Whether `dir` holds a finished cache.
    pub fn exists(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// Open a cache, refusing one made from other data, tokenizer or teacher, and verifying
    /// every shard's checksum.
    pub fn open(dir: &Path, expect: &Expect) -> Result<CacheReader> {
        let manifest = read_manifest(dir)?;
        let id = &manifest.id;
        let refuse = |what: &str, have: String, want: String| Error::input(format!(
            "teacher cache {}: made for {what} {have}, but this run has {want}; rebuild it with `distill cache-teacher` (or point cache.path elsewhere)",
            dir.display()));
        if id.format_version != FORMAT_VERSION {
            return Err(refuse("format version", id.format_version.to_string(), FORMAT_VERSION.to_string()));
        }
        if id.vocab_size != expect.vocab_size {
            return Err(refuse("a vocabulary of", id.vocab_size.to_string(), expect.vocab_size.to_string()));
        }
        if id.tokenizer_hash != expect.tokenizer_hash {
            return Err(refuse("tokenizer", short(&id.tokenizer_hash), short(expect.tokenizer_hash)));
        }
        if id.teacher_dtype != expect.teacher_dtype {
            return Err(refuse("teacher dtype", id.teacher_dtype.clone(), expect.teacher_dtype.to_string()));
        }
        if id.teacher_hash != expect.teacher_hash {
            return Err(refuse("teacher", short(&id.teacher_hash), short(expect.teacher_hash)));
        }
        if id.data_hash != expect.data_hash || id.seq_len != expect.seq_len || id.n_rows != expect.n_rows {
            return Err(refuse("data", format!("{} ({} rows of {})", short(&id.data_hash), id.n_rows, id.seq_len),
                format!("{} ({} rows of {})", short(expect.data_hash), expect.n_rows, expect.seq_len)));
        }
        // Sizes from the file, checked before anything is divided by or sized from them.
        let mpath = dir.join(MANIFEST);
        if id.rows_per_shard == 0 {
            return Err(Error::input(format!("{}: rows_per_shard is 0; expected a positive integer (a corrupt manifest: rebuild the cache with `distill cache-teacher`)", mpath.display())));
        }
        if id.k == 0 || id.k > id.vocab_size {
            return Err(Error::input(format!("{}: k = {}; expected 1 to the vocabulary ({}) (a corrupt manifest: rebuild the cache with `distill cache-teacher`)", mpath.display(), id.k, id.vocab_size)));
        }
        if manifest.shards.len() != id.n_shards() {
            return Err(Error::input(format!("{}: lists {} shards, expected {}", dir.join(MANIFEST).display(), manifest.shards.len(), id.n_shards())));
        }
        let mut shards = Vec::new();
        for (i, s) in manifest.shards.iter().enumerate() {
            let p = dir.join(&s.file);
            let f = std::fs::File::open(&p).map_err(|e| Error::input(format!("{}: missing teacher-cache shard: {e}", p.display())))?;
            // SAFETY: the file is opened read-only and we never write through the map; a
            // concurrent writer could change what we read, which the checksum below catches
            // for the state at open time.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
            let (first, rows, sha) = check_shard(&map, id, &p)?;
            if first != (i * id.rows_per_shard) as u64 || rows != s.rows || sha != s.sha256 {
                return Err(Error::input(format!("{}: does not match {} (shard {i})", p.display(), dir.join(MANIFEST).display())));
            }
            shards.push(map);
        }
        Ok(CacheReader { manifest, dir: dir.to_path_buf(), shards })
    }

    /// The decoded record of row `r`.
    pub fn row(&self, r: usize) -> Result<Vec<TokenTopK>> {
        let id = &self.manifest.id;
        let s = r / id.rows_per_shard;
        let local = r % id.rows_per_shard;
        let map = &self.shards[s];
        let off = |i: usize| u64::from_le_bytes(map[HEADER + 8 * i..HEADER + 8 * i + 8].try_into().expect("8 bytes")) as usize;
        let rows = self.manifest.shards[s].rows;
        let base = HEADER + 8 * (rows + 1);
        let bytes = &map[base + off(local)..base + off(local + 1)];
        let mut rd = BitReader::new(bytes);
        let corrupt = || Error::input(format!("{}: row {r} does not decode", self.dir.join(shard_name(s)).display()));
        let n = rd.get(32).ok_or_else(corrupt)? as usize;
        if n > id.seq_len {
            return Err(corrupt());
        }
        (0..n)
            .map(|_| decode_token(&mut rd, id.k.min(id.vocab_size), id.values, id.temperatures.len(), id.vocab_size).ok_or_else(corrupt))
            .collect()
    }

    /// The stored temperature index for `tau`, if its log-sum-exp is in the cache.
    pub fn temperature_index(&self, tau: f64) -> Option<usize> {
        self.manifest.id.temperatures.iter().position(|&t| (t - tau).abs() < 1e-9)
    }

    /// Teacher targets for `rows` (each `seq_len` positions; padding gets a harmless uniform
    /// target that the loss mask removes) at temperature `tau`.
    pub fn batch(&self, rows: &[usize], tau: f64, tail: TailMode) -> Result<TopKHost> {
        let id = &self.manifest.id;
        let (t, k) = (id.seq_len, id.k.min(id.vocab_size));
        let n = rows.len() * t;
        let mut ids = Vec::with_capacity(n * k);
        let mut logp = Vec::with_capacity(n * k);
        let mut tails = Vec::with_capacity(n);
        let ti = match tail {
            TailMode::Other => Some(self.temperature_index(tau).ok_or_else(|| Error::input(format!(
                "teacher cache {}: holds full-vocabulary log-sum-exps for temperatures {:?}, not {tau}; rebuild it with this distill.temperature, or use cache.tail = \"renormalize\"",
                self.dir.display(), id.temperatures)))?),
            TailMode::Renormalize => None,
        };
        for &r in rows {
            let toks = self.row(r)?;
            for tok in &toks {
                ids.extend(tok.ids.iter().map(|&i| i as i64));
                let scaled: Vec<f64> = tok.logits.iter().map(|&z| z as f64 / tau).collect();
                let m = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let norm = m + scaled.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                // With the other bucket the kept entries share 1 - tail; renormalized, all of it.
                let (shift, tail) = match ti {
                    Some(j) if tok.log_tail[j] > EMPTY_TAIL => {
                        let lt = tok.log_tail[j] as f64;
                        ((-lt.exp()).ln_1p(), lt as f32)
                    }
                    _ => (0.0, EMPTY_TAIL),
                };
                logp.extend(scaled.iter().map(|x| (x - norm + shift) as f32));
                tails.push(tail);
            }
            for _ in toks.len()..t {
                ids.extend(0..k as i64);
                logp.extend(std::iter::repeat_n(-(k as f32).ln(), k));
                tails.push(EMPTY_TAIL);
            }
        }
        Ok(TopKHost { n, k, ids, logp, tail: ti.map(|_| tails) })
    }
}

/// The mean divergence over the real tokens of `rows`, computed from full teacher logits and
/// from the cache: how much the cache changes the objective. `teacher`, `student`: logits of
/// those rows, (rows x seq_len x vocab) flat.
#[allow(clippy::too_many_arguments)]
pub fn divergence_online_and_cached(reader: &CacheReader, data: &Packed, rows: &[usize], teacher: &[f32], student: &[f32],
    tau: f64, tail: TailMode, divergence: crate::kd_loss::Divergence) -> Result<(f64, f64)> {
    use crate::kd_loss::{KdConfig, Target, kd_loss, kd_loss_to};
    let dev = Device::flex();
    let (t, v) = (reader.manifest.id.seq_len, reader.manifest.id.vocab_size);
    let cfg = KdConfig { alpha: 0.0, temperature: tau, chunk_tokens: 256, divergence };
    let (mut on, mut ca, mut n) = (0.0, 0.0, 0.0);
    for (ci, chunk) in rows.chunks(16).enumerate() {
        let nt = chunk.len() * t;
        let span = ci * 16 * t * v..(ci * 16 * t + nt) * v;
        let batch = data.batch(chunk, &dev);
        let st = || Tensor::<2>::from_data(TensorData::new(student[span.clone()].to_vec(), [nt, v]), &dev);
        let te = Tensor::<2>::from_data(TensorData::new(teacher[span.clone()].to_vec(), [nt, v]), &dev);
        let a = kd_loss(st(), Some(te), batch.targets.clone(), batch.mask.clone(), cfg);
        let host = reader.batch(chunk, tau, tail)?;
        let b = kd_loss_to(st(), Some(Target::TopK(host.to_device(&dev))), batch.targets, batch.mask, cfg);
        let w = batch.real_tokens as f64;
        on += a.kl.into_scalar::<f32>() as f64 * w;
        ca += b.kl.into_scalar::<f32>() as f64 * w;
        n += w;
    }
    Ok((on / n, ca / n))
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

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
                    let tail: f64 = (0..v).filter(|i| !t.ids.contains(&(*i as u32))).map(|i| (z[i] as f64 / tau - want).exp()).sum();
                    if k == v {
                        assert_eq!(t.log_tail[j], -60.0);
                    } else {
                        assert!((t.log_tail[j] as f64 - tail.ln()).abs() < 2e-3 * tail.ln().abs(), "tail {} vs {}", t.log_tail[j], tail.ln());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod ties {
    use super::*;
    use crate::rng::SplitMix;

    /// Ties at the k-th largest value keep the lowest ids (the documented rule), so a cache
    /// does not depend on a selection algorithm's internals (or a device's sort).
    #[test]
    fn ties_at_the_boundary_keep_the_lowest_ids() {
        let mut rng = SplitMix(5);
        let v = 200;
        for levels in [2usize, 4, 16] {
            let z: Vec<f32> = (0..v).map(|_| rng.below(levels) as f32).collect();
            for k in [1, 7, 50, 150] {
                let mut w = BitWriter::default();
                encode_token(&mut w, &z, k, ValueCodec::F16, &[1.0]);
                w.align();
                let t = decode_token(&mut BitReader::new(&w.bytes), k, ValueCodec::F16, 1, v).expect("decodes");
                let mut order: Vec<usize> = (0..v).collect();
                order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap().then(a.cmp(&b)));
                let mut want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
                want.sort();
                assert_eq!(t.ids, want, "levels {levels}, k {k}");
            }
        }
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::kd_loss::Divergence;
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
            format_version: FORMAT_VERSION, vocab_size: V, k, values, temperatures: vec![1.0, 2.0], seq_len: T,
            n_rows, rows_per_shard: 3, tokenizer_hash: "tok".into(), teacher_hash: "teacher".into(), teacher_dtype: "f32".into(), data_hash: data_hash.into(),
        }
    }

    pub fn expect(id: &CacheIdentity) -> Expect<'_> {
        Expect { vocab_size: V, seq_len: T, n_rows: id.n_rows, tokenizer_hash: &id.tokenizer_hash, teacher_hash: &id.teacher_hash, teacher_dtype: &id.teacher_dtype, data_hash: &id.data_hash }
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
        let logits_of = move |rows: &[usize]| rows.iter().flat_map(|&r| teacher[r * T * V..(r + 1) * T * V].to_vec()).collect();
        build(dir, &id, &f.data, host_select(logits_of, &f.data, &id), &BuildOptions { batch_size: 2, quiet: true, stop: &stop, teacher: Default::default() }).expect("build")
    }

    fn kl_pair(f: &Fixture, reader: &CacheReader, tau: f64, tail: TailMode, d: Divergence) -> (f64, f64) {
        divergence_online_and_cached(reader, &f.data, &f.rows, &f.teacher, &f.student, tau, tail, d).unwrap()
    }

    pub fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("distill-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn full_vocabulary_cache_reproduces_the_online_divergences() {
        let f = fixture();
        let dir = tmp("full");
        let m = build_cache(&f, &dir, V, ValueCodec::F16);
        assert_eq!(m.tokens as usize, f.data.n_tokens() - 1);
        let id = m.id.clone();
        let reader = CacheReader::open(&dir, &expect(&id)).unwrap();
        for tau in [1.0, 2.0] {
            for d in [Divergence::ForwardKl, Divergence::ReverseKl, Divergence::Jsd { beta: 0.5 }, Divergence::Tv] {
                for tail in [TailMode::Other, TailMode::Renormalize] {
                    let (on, ca) = kl_pair(&f, &reader, tau, tail, d);
                    // f16 keeps 11 significant bits of logits of size ~10: about 5e-3 absolute.
                    assert!((on - ca).abs() < 2e-3 * on.max(0.1), "{d:?} tau {tau} {tail:?}: online {on}, cache {ca}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The top-k approximation error, measured (printed with `--nocapture`): it shrinks as k
    /// grows, the "other" bucket beats renormalizing, and quantized values cost little.
    /// Mean over real tokens of KL(p_t|K || p_s|K) at tau = 1, K the teacher's k largest
    /// logits, both distributions renormalized over K.
    fn restricted_kl(f: &Fixture, k: usize) -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        for &r in &f.rows {
            let mask = f.data.row(r).2;
            for (j, m) in mask.iter().enumerate() {
                if *m == 0.0 {
                    continue;
                }
                let at = (r * T + j) * V;
                let (t, s) = (&f.teacher[at..at + V], &f.student[at..at + V]);
                let mut ids: Vec<usize> = (0..V).collect();
                ids.sort_by(|a, b| t[*b].total_cmp(&t[*a]));
                let dist = |z: &[f32]| -> Vec<f64> {
                    let e: Vec<f64> = ids[..k].iter().map(|&i| (z[i] as f64).exp()).collect();
                    let tot: f64 = e.iter().sum();
                    e.iter().map(|x| x / tot).collect()
                };
                let (p, q) = (dist(t), dist(s));
                sum += p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f64>();
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn top_k_error_shrinks_with_k() {
        let f = fixture();
        let mut last = f64::INFINITY;
        for k in [8, 32, 128] {
            let mut errs = Vec::new();
            for values in [ValueCodec::F16, ValueCodec::Q8] {
                let dir = tmp(&format!("k{k}-{values:?}"));
                let m = build_cache(&f, &dir, k, values);
                let reader = CacheReader::open(&dir, &expect(&m.id)).unwrap();
                let (on, other) = kl_pair(&f, &reader, 1.0, TailMode::Other, Divergence::ForwardKl);
                let (_, renorm) = kl_pair(&f, &reader, 1.0, TailMode::Renormalize, Divergence::ForwardKl);
                let (eo, er) = ((other - on).abs() / on, (renorm - on).abs() / on);
                println!("k {k:>4} {values:?}: {:.1} bytes/token, KL online {on:.4}, other-bucket rel. error {eo:.4}, renormalized {er:.4}", m.bytes_per_token());
                // Renormalized, the cache gives KL between teacher and student each restricted
                // to the teacher's top k: computed here in f64 from the dense logits.
                let want = restricted_kl(&f, k);
                let tol = if values == ValueCodec::F16 { 2e-3 } else { 2e-2 };
                assert!((renorm - want).abs() < tol * want.max(0.1), "k = {k} {values:?}: renormalized {renorm} vs restricted reference {want}");
                errs.push(eo);
                let _ = std::fs::remove_dir_all(&dir);
            }
            assert!(errs[0] < last, "k = {k}: error {} did not shrink from {last}", errs[0]);
            assert!((errs[1] - errs[0]).abs() < 0.02, "q8 adds at most 2% relative KL error at k = {k}: {errs:?}");
            last = errs[0];
        }
    }

    #[test]
    fn mismatched_or_corrupt_caches_are_refused() {
        let f = fixture();
        let dir = tmp("bad");
        let m = build_cache(&f, &dir, 8, ValueCodec::Q8);
        let mut id = m.id.clone();
        for (field, msg) in [("teacher", "teacher"), ("data", "data"), ("tokenizer", "tokenizer"), ("dtype", "teacher dtype")] {
            let mut other = id.clone();
            match field {
                "teacher" => other.teacher_hash = "other".into(),
                "dtype" => other.teacher_dtype = "bf16".into(),
                "data" => other.data_hash = "other".into(),
                _ => other.tokenizer_hash = "other".into(),
            }
            let e = CacheReader::open(&dir, &expect(&other)).err().expect("refused").to_string();
            assert!(e.contains(&format!("made for {msg}")) && e.contains("distill cache-teacher"), "{e}");
        }
        id.vocab_size += 1;
        let e = CacheReader::open(&dir, &Expect { vocab_size: id.vocab_size, ..expect(&m.id) }).err().unwrap().to_string();
        assert!(e.contains("vocabulary"), "{e}");
        // Flip one bit in the middle of a shard: its checksum catches it, naming the file.
        let shard = dir.join("shard-00001.bin");
        let mut b = std::fs::read(&shard).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(&shard, &b).unwrap();
        let e = CacheReader::open(&dir, &expect(&m.id)).err().unwrap().to_string();
        assert!(e.contains("shard-00001.bin") && e.contains("checksum"), "{e}");
        // A rebuild keeps the good shards and replaces the corrupt one.
        let m2 = build_cache(&f, &dir, 8, ValueCodec::Q8);
        assert_eq!(m2.shards[1].sha256, m.shards[1].sha256);
        assert!(CacheReader::open(&dir, &expect(&m2.id)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod device_path {
    use super::round_trip::*;
    use super::*;
    use crate::model::DecoderConfig;
    use crate::recipe::ModelShape;
    use burn::tensor::DType;

    fn teacher(dev: &Device) -> Decoder {
        let shape = ModelShape {
            d_model: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, d_ff: 32, max_seq_len: 64, rope_theta: 10_000.0,
            tie_embeddings: false, norm_eps: 1e-5, layer_pattern: "A".into(), window: None, qkv_bias: false,
            rope_scaling: None, mamba: Default::default(), o_bias: false, window_from_layer: 0,
        };
        DecoderConfig { vocab_size: V, shape }.init(3, dev)
    }

    /// A cache built on the device (top-k and log-sum-exps there; only k + slack candidates per
    /// token come to the host) decodes to the records of the naive host-side reference (full
    /// logits on the host, `select_host`): ids and values exactly, the log-sum-exps and tail
    /// masses to one unit in the last place of their f32 / f16 codes (the f64 sums run in
    /// another order). A bf16 teacher's logits tie often; slack 0 sends every token with a
    /// tie across the k-th value through the full-row fallback.
    #[test]
    fn device_selection_equals_the_host_reference() {
        let f = fixture();
        let dev = Device::flex();
        for (name, t) in [("f32", teacher(&dev)), ("bf16", teacher(&dev).cast(DType::BF16))] {
            let full = |rows: &[usize]| t.forward(f.data.batch(rows, &dev).inputs).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            for k in [8, 40] {
                let id = ident(k, ValueCodec::F16, f.data.n_rows(), "data");
                let stop = AtomicBool::new(false);
                let opts = || BuildOptions { batch_size: 3, quiet: true, stop: &stop, teacher: Default::default() };
                let ref_dir = tmp(&format!("dev-ref-{name}-{k}"));
                build(&ref_dir, &id, &f.data, host_select(full, &f.data, &id), &opts()).unwrap();
                let want = CacheReader::open(&ref_dir, &expect(&id)).unwrap();
                // Ties across the boundary in the reference's logits (the case the rule is for).
                let all = full(&f.rows);
                let ties = (0..f.rows.len() * T).filter(|&i| {
                    let mut z = all[i * V..(i + 1) * V].to_vec();
                    z.sort_by(|a, b| b.total_cmp(a));
                    z[k - 1] == z[k]
                }).count();
                if name == "bf16" {
                    assert!(ties > 0, "bf16 logits should tie at the boundary somewhere");
                }
                for slack in [TIE_SLACK, 0] {
                    let dir = tmp(&format!("dev-{name}-{k}-{slack}"));
                    let fwd = |rows: &[usize]| t.forward(f.data.batch(rows, &dev).inputs);
                    build(&dir, &id, &f.data, device_select(fwd, &f.data, &id, slack), &opts()).unwrap();
                    let got = CacheReader::open(&dir, &expect(&id)).unwrap();
                    for r in 0..f.data.n_rows() {
                        let (a, b) = (got.row(r).unwrap(), want.row(r).unwrap());
                        assert_eq!(a.len(), b.len());
                        for (p, (x, y)) in a.iter().zip(&b).enumerate() {
                            let at = format!("{name} k {k} slack {slack} row {r} pos {p}");
                            assert_eq!(x.ids, y.ids, "{at}");
                            assert_eq!(x.logits, y.logits, "{at}");
                            for j in 0..2 {
                                assert!((x.lse[j].to_bits() as i64 - y.lse[j].to_bits() as i64).abs() <= 1, "{at}: lse {} vs {}", x.lse[j], y.lse[j]);
                                let (hx, hy) = (half::f16::from_f32(x.log_tail[j]).to_bits() as i64, half::f16::from_f32(y.log_tail[j]).to_bits() as i64);
                                assert!((hx - hy).abs() <= 1, "{at}: log tail {} vs {}", x.log_tail[j], y.log_tail[j]);
                            }
                        }
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let _ = std::fs::remove_dir_all(&ref_dir);
            }
        }
    }
}

#[cfg(test)]
mod crafted {
    use super::round_trip::*;
    use super::*;

    /// Replace shard `i`'s body by `edit(body)`, then make it self-consistent again (its own
    /// SHA-256 trailer and the manifest's entry), so only the structural checks can catch it.
    fn rewrite_shard(dir: &Path, i: usize, edit: impl FnOnce(&mut Vec<u8>)) {
        use sha2::{Digest, Sha256};
        let p = dir.join(shard_name(i));
        let b = std::fs::read(&p).unwrap();
        let mut body = b[..b.len() - 32].to_vec();
        edit(&mut body);
        let sum: [u8; 32] = Sha256::digest(&body).into();
        body.extend(sum);
        std::fs::write(&p, &body).unwrap();
        let mp = dir.join(MANIFEST);
        let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
        m["shards"][i]["sha256"] = sha256_hex(&body).into();
        m["shards"][i]["bytes"] = (body.len() as u64).into();
        std::fs::write(&mp, serde_json::to_string(&m).unwrap()).unwrap();
    }

    fn set_u64(body: &mut [u8], at: usize, v: u64) {
        body[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Open the cache and read every row: crafted files must give an input error naming the
    /// shard, never a panic.
    fn open_and_read(dir: &Path, id: &CacheIdentity) -> std::result::Result<(), Error> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
            let reader = CacheReader::open(dir, &expect(id))?;
            for row in 0..id.n_rows {
                reader.row(row)?;
            }
            Ok(())
        }));
        r.unwrap_or_else(|p| panic!("panicked instead of refusing: {:?}", p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))))
    }

    fn refused(dir: &Path, id: &CacheIdentity, what: &str) -> String {
        let e = open_and_read(dir, id).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.exit_code(), 2, "{what}: {e}");
        e.to_string()
    }

    #[test]
    fn crafted_shard_headers_and_offsets_are_refused() {
        let f = fixture();
        let rows_at = 8 + 4 + 32 + 8;
        let table = HEADER;
        for (case, edit) in [
            // 8 * (rows + 1) overflows usize.
            ("rows overflow", Box::new(move |b: &mut Vec<u8>| set_u64(b, rows_at, u64::MAX / 4)) as Box<dyn FnOnce(&mut Vec<u8>)>),
            ("rows huge", Box::new(move |b: &mut Vec<u8>| set_u64(b, rows_at, 1 << 40))),
            // Row 1 starts after row 2 (non-monotone), the total still adds up.
            ("non-monotone", Box::new(move |b: &mut Vec<u8>| {
                let end = u64::from_le_bytes(b[table + 16..table + 24].try_into().unwrap());
                set_u64(b, table + 8, end + 5);
            })),
            // Row 1 starts beyond the file.
            ("beyond the file", Box::new(move |b: &mut Vec<u8>| set_u64(b, table + 8, 1 << 50))),
            // The first offset is not 0.
            ("first offset", Box::new(move |b: &mut Vec<u8>| set_u64(b, table, 3))),
        ] {
            let dir = tmp(&format!("crafted-{}", case.replace(' ', "-")));
            let m = build_cache(&f, &dir, 8, ValueCodec::Q8);
            rewrite_shard(&dir, 0, edit);
            let e = refused(&dir, &m.id, case);
            assert!(e.contains("shard-00000.bin") && e.contains("offset"), "{case}: {e}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn zero_rows_per_shard_in_a_manifest_is_refused() {
        let f = fixture();
        let dir = tmp("crafted-rps0");
        let m = build_cache(&f, &dir, 8, ValueCodec::Q8);
        let mp = dir.join(MANIFEST);
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
        j["rows_per_shard"] = 0.into();
        std::fs::write(&mp, serde_json::to_string(&j).unwrap()).unwrap();
        let e = refused(&dir, &m.id, "rows_per_shard = 0");
        assert!(e.contains("cache.json") && e.contains("rows_per_shard"), "{e}");
        // A k beyond the vocabulary would size allocations from the file.
        j["rows_per_shard"] = 3.into();
        j["k"] = (1u64 << 60).into();
        std::fs::write(&mp, serde_json::to_string(&j).unwrap()).unwrap();
        let e = refused(&dir, &m.id, "k huge");
        assert!(e.contains("cache.json") && e.contains("k"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Opening a cache reads each shard through SHA-256 once (its trailer and the manifest's
    /// digest come from one pass).
    #[test]
    fn opening_hashes_each_shard_once() {
        let f = fixture();
        let dir = tmp("hash-once");
        let m = build_cache(&f, &dir, 8, ValueCodec::Q8);
        HASHED.with(|h| h.set(0));
        CacheReader::open(&dir, &expect(&m.id)).unwrap();
        assert_eq!(HASHED.with(|h| h.get()), m.bytes, "bytes hashed on open vs shard bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod curriculum_scores {
    use super::round_trip::*;
    use super::*;
    use crate::curriculum::{TeacherScores, scores, token_scores_full};
    use crate::recipe::DifficultyScore;

    /// Per-row mean teacher CE and entropy from the full logits: the reference.
    fn reference(f: &Fixture) -> (Vec<f64>, Vec<f64>) {
        let (mut ce, mut ent) = (vec![], vec![]);
        for &r in &f.rows {
            let (_, targets, _) = f.data.row(r);
            let n = f.data.row_len(r);
            let s: Vec<(f64, f64)> = (0..n).map(|p| token_scores_full(&f.teacher[(r * T + p) * V..(r * T + p + 1) * V], targets[p] as usize)).collect();
            ce.push(s.iter().map(|x| x.0).sum::<f64>() / n as f64);
            ent.push(s.iter().map(|x| x.1).sum::<f64>() / n as f64);
        }
        (ce, ent)
    }

    /// Curriculum scores read from the cache equal the teacher's at k = vocabulary (to f16
    /// rounding) and are lower bounds below it (the tail counted as one category).
    #[test]
    fn cache_scores_match_the_teacher_at_full_k_and_bound_it_below() {
        let f = fixture();
        let (ce, ent) = reference(&f);
        for (k, exact) in [(V, true), (8, false)] {
            let dir = tmp(&format!("scores-{k}"));
            let m = build_cache(&f, &dir, k, ValueCodec::F16);
            let reader = CacheReader::open(&dir, &expect(&m.id)).unwrap();
            let run = dir.join("run");
            std::fs::create_dir_all(run.join("data")).unwrap();
            let src = TeacherScores::Cache(&reader);
            let got_ce = scores(&run, DifficultyScore::TeacherCe, &f.data, &src).unwrap();
            let got_ent = scores(&run, DifficultyScore::TeacherEntropy, &f.data, &src).unwrap();
            for r in 0..ce.len() {
                let (c, e) = (got_ce[r] as f64, got_ent[r] as f64);
                if exact {
                    assert!((c - ce[r]).abs() < 1e-2 && (e - ent[r]).abs() < 1e-2, "row {r}: cache ({c}, {e}) vs teacher ({}, {})", ce[r], ent[r]);
                } else {
                    assert!(c <= ce[r] + 1e-2 && e <= ent[r] + 1e-2, "row {r}: cache ({c}, {e}) above teacher ({}, {})", ce[r], ent[r]);
                }
            }
            if !exact {
                // Random targets mostly fall outside the top 8: the bound is far from tight.
                assert!(got_ce.iter().zip(&ce).any(|(&c, &t)| (c as f64) < t - 0.5));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
