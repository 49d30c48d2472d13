//! Building a cache: the teacher runs over every training row; each token's top k and
//! log-sum-exps are selected on the device (only k + slack candidates per token reach the
//! host) and written shard by shard, keeping the shards an interrupted build finished.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor, TensorData};

use super::CacheIdentity;
use super::format::{
    MANIFEST, Manifest, Selected, ShardInfo, TeacherRecord, check_shard, encode_selected, shard_bytes, shard_name,
};
use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::teacher::bits::BitWriter;
use crate::teacher::codec::ValueCodec;
use crate::util::{sha256_hex, write_atomic, write_json_atomic};

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
pub fn decoder_logits<'a>(
    teacher: &'a Decoder,
    data: &'a Packed,
    device: &'a Device,
) -> impl FnMut(&[usize]) -> Vec<f32> + 'a {
    move |rows| {
        let batch = data.batch(rows, device);
        teacher
            .forward_docs(batch.inputs, batch.docs.as_ref())
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 logits")
    }
}

/// Per training row, the selection of each of its real tokens.
pub type Selections = Vec<Vec<Selected>>;

/// A batch's selections, or the host work that finishes them: the build runs it on a worker
/// thread while the device computes the next batch.
pub type Pending<'a> = Box<dyn FnOnce() -> Result<Selections> + Send + 'a>;

/// A batch whose device work is queued: calling it waits for the device and reads back. The
/// build queues the next batch's kernels before starting the host's work on the previous one,
/// so that the thread launching them never competes with that work for a core.
pub type Launched<'a> = Box<dyn FnOnce() -> Result<Pending<'a>> + 'a>;

fn non_finite(x: f32, r: usize, p: usize) -> Error {
    Error::runtime(format!("teacher logit {x} at row {r}, position {p}: the teacher produced a non-finite value"))
}

/// The naive way: full logits of the given rows on the host (rows x seq_len x vocab, flat),
/// each token selected there by `select_host`. For logits already on the host (bench-cache)
/// and as the tests' reference.
pub fn host_select<'a>(
    mut logits_of: impl FnMut(&[usize]) -> Vec<f32> + 'a,
    data: &'a Packed,
    id: &CacheIdentity,
) -> impl FnMut(&[usize]) -> Result<Launched<'a>> + 'a {
    let (t, v, k, temps) = (id.seq_len, id.vocab_size, id.k, id.temperatures.clone());
    move |rows| {
        let logits = logits_of(rows);
        let sel = rows
            .iter()
            .enumerate()
            .map(|(j, &r)| {
                data.loss_positions(r)
                    .into_iter()
                    .map(|p| {
                        let z = &logits[(j * t + p) * v..(j * t + p + 1) * v];
                        match z.iter().find(|x| !x.is_finite()) {
                            Some(&bad) => Err(non_finite(bad, r, p)),
                            None => Ok(select_host(z, k, &temps)),
                        }
                    })
                    .collect()
            })
            .collect::<Result<Selections>>()?;
        Ok(Box::new(move || Ok(Box::new(move || Ok(sel)) as Pending)) as Launched)
    }
}

/// Candidates beyond k pulled from the device, so that ties at the k-th value can be resolved
/// by id on the host; a token whose tie run is longer falls back to its full row.
const TIE_SLACK: usize = 64;

/// Cores the host's work on a batch leaves to the thread feeding the device. It runs while that
/// thread waits for the device, not while it queues kernels: on the H200 machine a worker on all
/// cores beside the queuing stretched the teacher's forward from 76 to 90 ms a batch.
const FEEDER_CORES: usize = 2;

/// The teacher as the cache sees it: it runs on the device, which also takes each token's top
/// k (+ `TIE_SLACK`) and its log-sum-exps; only those come to the host, never the
/// `[batch, seq, vocab]` logits.
pub fn decoder_select<'a>(
    teacher: &'a Decoder,
    data: &'a Packed,
    device: &'a Device,
    id: &CacheIdentity,
) -> impl FnMut(&[usize]) -> Result<Launched<'a>> + 'a {
    let forward = move |rows: &[usize]| {
        let batch = data.batch(rows, device);
        teacher.forward_docs(batch.inputs, batch.docs.as_ref())
    };
    device_select(forward, data, id, TIE_SLACK, crate::profile::PhaseTimer::reporting_on_drop(device, "teacher cache"))
}

fn device_select<'a>(
    mut forward: impl FnMut(&[usize]) -> Tensor<3> + 'a,
    data: &'a Packed,
    id: &CacheIdentity,
    slack: usize,
    prof: crate::profile::PhaseTimer,
) -> impl FnMut(&[usize]) -> Result<Launched<'a>> + 'a {
    let (v, k, temps) = (id.vocab_size, id.k.min(id.vocab_size), id.temperatures.clone());
    // Shared by a batch's launch and its read-back.
    let prof = std::rc::Rc::new(std::cell::RefCell::new(prof));
    let mut first = true;
    move |rows| {
        // Between two batches the build waits for the host's work on the previous one.
        if !std::mem::take(&mut first) {
            prof.borrow_mut().mark("waiting for the host (selection, encoding, writing)");
        }
        prof.borrow_mut().start_step();
        let logits = forward(rows);
        prof.borrow_mut().mark("teacher forward");
        let [b, t, _] = logits.dims();
        let queued = queue_candidates(logits.reshape([b * t, v]), k, slack, &temps);
        let (rows, temps, prof) = (rows.to_vec(), temps.clone(), prof.clone());
        Ok(Box::new(move || {
            let cand = queued.read(&mut prof.borrow_mut());
            prof.borrow_mut()
                .count("positions selected from their whole row (ties past the candidates)", cand.full_at.len() as u64);
            Ok(Box::new(move || {
                let sel = cand.select(k, &temps, |i| (rows[i / t], i % t))?;
                // Only the positions in the loss are kept (and stored).
                let keep: Vec<Vec<bool>> = rows
                    .iter()
                    .map(|&r| {
                        let mut k = vec![false; t];
                        data.loss_positions(r).into_iter().for_each(|p| k[p] = true);
                        k
                    })
                    .collect();
                let mut out: Selections = keep.iter().map(|k| Vec::with_capacity(k.len())).collect();
                for (i, s) in sel.into_iter().enumerate() {
                    let (j, p) = (i / t, i % t);
                    if keep[j][p] {
                        out[j].push(s);
                    }
                }
                Ok(out)
            }) as Pending)
        }) as Launched)
    }
}

/// What the device computes for a chunk of positions: the top `k + slack` values and ids, and
/// per position and temperature the sum of exp((z - top) / tau) over the entries strictly below
/// the k-th value (outside the kept set whatever the ties). The rest of each sum, the entries
/// at or above the k-th value, are all among the candidates: the host adds them in f64.
struct DeviceSums {
    vals: Tensor<2>,
    idx: Tensor<2, burn::tensor::Int>,
    sums: Tensor<2>,
}

fn device_sums(z: Tensor<2>, k: usize, kk: usize, temps: &[f64]) -> DeviceSums {
    #[cfg(feature = "tch")]
    if let Some((vals, idx, sums)) = crate::kernels::torch::topk_tail_sums(&z, k, kk, temps) {
        return DeviceSums { vals, idx, sums };
    }
    use burn::tensor::DType;
    let [n, v] = z.dims();
    let (vals, idx) = z.clone().topk_with_indices(kk, 1);
    let top = vals.clone().slice([0..n, 0..1]);
    let kth = vals.clone().slice([0..n, k - 1..k]).expand([n, v]);
    let at_or_above = z.clone().greater_equal(kth);
    let zd = z.cast(DType::F64) - top.cast(DType::F64).expand([n, v]);
    let cols = temps.iter().map(|&tau| zd.clone().div_scalar(tau).exp().mask_fill(at_or_above.clone(), 0.0).sum_dim(1));
    DeviceSums { vals, idx, sums: Tensor::cat(cols.collect(), 1) }
}

/// A batch's candidates as read back from the device, in the device's dtypes (converted on
/// the host's worker, not on the thread feeding the device).
struct Candidates {
    /// `[n, kk]` values (largest first) and ids, `[n, temps]` tail sums.
    vals: TensorData,
    idx: TensorData,
    sums: TensorData,
    kk: usize,
    /// The positions whose ties run past the candidates (ascending) and their whole rows of
    /// logits `[full_at.len(), vocab]`.
    full_at: Vec<usize>,
    full: Option<TensorData>,
}

/// A batch's device work in flight: its logits, and the candidates and sums being computed.
struct Queued {
    z: Tensor<2>,
    vals: Tensor<2>,
    idx: Tensor<2, burn::tensor::Int>,
    sums: Tensor<2>,
    /// Per position, whether its ties may run past the candidates (`None`: all logits are
    /// candidates).
    short: Option<Tensor<2, burn::tensor::Bool>>,
    kk: usize,
}

/// Queue the device's part of selecting the records of `n` tokens from their logits
/// `[n, vocab]`. The device works through the positions in chunks (bounding its f32 or f64
/// copy of their logits: 512 MiB on LibTorch, 256 MiB elsewhere).
fn queue_candidates(z: Tensor<2>, k: usize, slack: usize, temps: &[f64]) -> Queued {
    let [n, v] = z.dims();
    let kk = (k + slack).min(v);
    #[cfg(feature = "tch")]
    let budget = if crate::kernels::torch::is_libtorch(&z) { 128usize << 20 } else { 32 << 20 };
    #[cfg(not(feature = "tch"))]
    let budget = 32usize << 20;
    let chunk = (budget / v).max(1);
    let parts: Vec<DeviceSums> = (0..n)
        .step_by(chunk)
        .map(|c0| device_sums(z.clone().slice([c0..(c0 + chunk).min(n), 0..v]), k, kk, temps))
        .collect();
    let (mut vals, mut idx, mut sums) = (Vec::new(), Vec::new(), Vec::new());
    for p in parts {
        vals.push(p.vals);
        idx.push(p.idx);
        sums.push(p.sums);
    }
    let vals = Tensor::cat(vals, 0);
    // The candidates hold every entry >= the k-th value when the last of them is below it; a
    // NaN compares false here and is refused on the host (topk ranks NaN first).
    let short =
        (kk < v).then(|| vals.clone().slice([0..n, kk - 1..kk]).greater_equal(vals.clone().slice([0..n, k - 1..k])));
    Queued { z, vals, idx: Tensor::cat(idx, 0), sums: Tensor::cat(sums, 0), short, kk }
}

impl Queued {
    /// Wait for the device and read the candidates back: one read per batch, plus one for the
    /// rare positions whose ties run past the candidates (every read-back stalls a GPU's
    /// queue).
    fn read(self, prof: &mut crate::profile::PhaseTimer) -> Candidates {
        prof.mark("top-k, sums");
        let vals = self.vals.into_data();
        let idx = self.idx.into_data();
        let sums = self.sums.into_data();
        let full_at: Vec<usize> = match self.short {
            Some(s) => s.into_data().iter::<bool>().enumerate().filter(|(_, b)| *b).map(|(i, _)| i).collect(),
            None => Vec::new(),
        };
        prof.mark("read");
        let full = (!full_at.is_empty()).then(|| {
            let ids: Vec<i64> = full_at.iter().map(|&i| i as i64).collect();
            let ids =
                Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(ids, [full_at.len()]), &self.z.device());
            self.z.select(0, ids).into_data()
        });
        prof.mark("tie fallbacks (read)");
        Candidates { vals, idx, sums, kk: self.kk, full_at, full }
    }
}

impl Candidates {
    /// Each position's record, across the cores but [`FEEDER_CORES`]; `at(i)`: the row and
    /// position of the i-th, for errors.
    fn select(self, k: usize, temps: &[f64], at: impl Fn(usize) -> (usize, usize)) -> Result<Vec<Selected>> {
        let kk = self.kk;
        let vals: Vec<f32> = self.vals.try_into_vec_as::<f32>().expect("f32");
        let idx: Vec<i64> = self.idx.try_into_vec_as::<i64>().expect("i64");
        let sums: Vec<f64> = self.sums.try_into_vec_as::<f64>().expect("f64");
        let full: Vec<f32> = self.full.map(|d| d.try_into_vec_as::<f32>().expect("f32")).unwrap_or_default();
        let v = if self.full_at.is_empty() { 0 } else { full.len() / self.full_at.len() };
        let w = temps.len();
        let positions: Vec<usize> = (0..vals.len() / kk).collect();
        let records =
            crate::util::par_map_leaving(&positions, FEEDER_CORES, |&i| -> std::result::Result<Selected, f32> {
                if let Ok(j) = self.full_at.binary_search(&i) {
                    let row = &full[j * v..(j + 1) * v];
                    return match row.iter().find(|x| !x.is_finite()) {
                        Some(&bad) => Err(bad),
                        None => Ok(select_host(row, k, temps)),
                    };
                }
                let (cv, ci) = (&vals[i * kk..(i + 1) * kk], &idx[i * kk..(i + 1) * kk]);
                if let Some(&bad) = cv[..k].iter().find(|x| !x.is_finite()) {
                    return Err(bad);
                }
                let vk = cv[k - 1];
                let mut c: Vec<(f32, u32)> = cv.iter().cloned().zip(ci.iter().map(|&x| x as u32)).collect();
                c.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
                let top = c[0].0;
                // The entries at or above the k-th value, all of them candidates: the kept k and the
                // ties at the k-th value left out.
                let upper = c.iter().take_while(|x| x.0 >= vk).count();
                let not_kept_eq = (upper - k) as f64;
                c.truncate(k);
                c.sort_by_key(|x| x.1);
                let (mut lse, mut log_tail) = (Vec::new(), Vec::new());
                for (j, &tau) in temps.iter().enumerate() {
                    let e = |x: f32| ((x as f64 - top as f64) / tau).exp();
                    let low = sums[i * w + j];
                    let all = low + cv[..upper].iter().map(|&x| e(x)).sum::<f64>();
                    if !all.is_finite() {
                        return Err(f32::NAN);
                    }
                    lse.push(top as f64 / tau + all.ln());
                    let tail = low + not_kept_eq * e(vk);
                    log_tail.push((tail / all).ln());
                }
                Ok(Selected {
                    ids: c.iter().map(|x| x.1).collect(),
                    kept: c.iter().map(|x| x.0).collect(),
                    top,
                    lse,
                    log_tail,
                })
            });
        records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|bad| {
                    let (r, p) = at(i);
                    non_finite(bad, r, p)
                })
            })
            .collect()
    }
}

/// Run the teacher (`select`: the selections of given rows) over every row of `data` and write
/// the cache into `dir` (keeping shards a previous, interrupted build finished). Returns the
/// manifest.
pub fn build<'s>(
    dir: &Path,
    id: &CacheIdentity,
    data: &Packed,
    mut select: impl FnMut(&[usize]) -> Result<Launched<'s>>,
    opts: &BuildOptions,
) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let total_tokens: u64 = (0..data.n_rows()).map(|r| data.loss_positions(r).len() as u64).sum();
    let pb = crate::util::progress_bar("cache", total_tokens, opts.quiet);
    let mut shards = Vec::new();
    let mut tokens = 0u64;
    for s in 0..id.n_shards() {
        let first = s * id.rows_per_shard;
        let rows: Vec<usize> = (first..((s + 1) * id.rows_per_shard).min(id.n_rows)).collect();
        let shard_tokens: u64 = rows.iter().map(|&r| data.loss_positions(r).len() as u64).sum();
        let path = dir.join(shard_name(s));
        let existing = std::fs::read(&path)
            .ok()
            .filter(|b| check_shard(b, id, &path).is_ok_and(|(f, n, _)| f == first as u64 && n == rows.len()));
        let bytes = match existing {
            Some(b) => b,
            None => {
                let mut records = Vec::with_capacity(rows.len());
                // A batch's host work (finishing its selection, encoding) runs on a worker while
                // the device computes the next one; it leaves cores to the thread feeding the
                // device.
                let encode = |sel: Selections| {
                    crate::util::par_map_leaving(&sel, FEEDER_CORES, |toks| {
                        let mut w = BitWriter::default();
                        w.put(toks.len() as u32, 32);
                        for s in toks {
                            encode_selected(&mut w, s, id.values);
                        }
                        w.align();
                        (w.bytes, toks.len())
                    })
                };
                let mut add = |done: Vec<(Vec<u8>, usize)>| {
                    for (bytes, n) in done {
                        records.push(bytes);
                        pb.inc(n as u64);
                    }
                };
                std::thread::scope(|sc| -> Result<()> {
                    // The order per batch: queue its device work, start the host's work on the
                    // previous one, wait for the device, then for the host.
                    let mut prev: Option<Pending> = None;
                    for chunk in rows.chunks(opts.batch_size.max(1)) {
                        if opts.stop.load(Ordering::SeqCst) {
                            pb.abandon();
                            return Err(Error::Interrupted(format!(
                                "teacher cache stopped after {s} of {} shards (finished shards are kept)",
                                id.n_shards()
                            )));
                        }
                        let launched = select(chunk)?;
                        let worker = prev.take().map(|work| sc.spawn(move || work().map(encode)));
                        let now = launched();
                        if let Some(h) = worker {
                            add(h.join().expect("cache worker")?);
                        }
                        prev = Some(now?);
                    }
                    if let Some(work) = prev {
                        add(work().map(encode)?);
                    }
                    Ok(())
                })?;
                let b = shard_bytes(id, first, &records);
                write_atomic(&path, &b)?;
                b
            }
        };
        if pb.position() < tokens + shard_tokens {
            pb.set_position(tokens + shard_tokens);
        }
        tokens += shard_tokens;
        shards.push(ShardInfo {
            file: shard_name(s),
            first_row: first,
            rows: rows.len(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    pb.finish_and_clear();
    let bytes = shards.iter().map(|s| s.bytes).sum();
    // Real positions the cache does not hold: prompts, padding-free boundaries, masked turns.
    let skipped = (0..data.n_rows()).map(|r| data.row_len(r) as u64).sum::<u64>() - tokens;
    let m = Manifest { id: id.clone(), tokens, skipped, bytes, shards, teacher: opts.teacher.clone() };
    write_json_atomic(&dir.join(MANIFEST), &m)?;
    Ok(m)
}

#[cfg(test)]
mod ties {
    use super::*;
    use crate::rng::SplitMix;
    use crate::teacher::bits::BitReader;
    use crate::teacher::cache::decode_token;

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
mod device_path {
    use super::super::test_fixture::*;
    use super::*;
    use crate::model::DecoderConfig;
    use crate::model::config::ModelShape;
    use crate::teacher::cache::{BuildOptions, CacheReader};
    use burn::tensor::DType;

    fn teacher(dev: &Device) -> Decoder {
        let shape = ModelShape::for_tests(16, 1, 2, 1, 32);
        DecoderConfig { vocab_size: V, shape }.init(3, dev)
    }

    /// A cache built on the device (top-k and log-sum-exps there; only k + slack candidates per
    /// token come to the host) decodes to the records of the naive host-side reference (full
    /// logits on the host, `select_host`): ids and values exactly, the log-sum-exps and tail
    /// masses to one unit in the last place of their f32 / f16 codes (the f64 sums run in
    /// another order). A bf16 teacher's logits tie often; slack 0 sends every token with a
    /// tie across the k-th value through the full-row fallback.
    ///
    /// With `--features tch` the same holds for the LibTorch kernels (CPU here, the GPU in
    /// scripts/gpu-check.sh), whose tail sums run in f32: log-sum-exps there to 16 units in the
    /// last place of their f32 codes (a relative 2e-6).
    #[test]
    #[allow(deprecated)]
    fn device_selection_equals_the_host_reference() {
        let f = fixture();
        #[allow(unused_mut)]
        let mut devices = vec![(Device::flex(), 1i64)];
        #[cfg(feature = "tch")]
        devices.push((Device::libtorch(), 16));
        for (dev, lse_ulps) in devices {
            selection_on(&f, &dev, lse_ulps);
        }
    }

    fn selection_on(f: &Fixture, dev: &Device, lse_ulps: i64) {
        let dev = dev.clone();
        for (name, t) in [("f32", teacher(&dev)), ("bf16", teacher(&dev).cast(DType::BF16))] {
            let full = |rows: &[usize]| {
                t.forward(f.data.batch(rows, &dev).inputs).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
            };
            for k in [8, 40] {
                let id = ident(k, ValueCodec::F16, f.data.n_rows(), "data");
                let stop = AtomicBool::new(false);
                let opts = || BuildOptions { batch_size: 3, quiet: true, stop: &stop, teacher: Default::default() };
                let ref_dir = tmp(&format!("dev-ref-{name}-{k}"));
                build(&ref_dir, &id, &f.data, host_select(full, &f.data, &id), &opts()).unwrap();
                let want = CacheReader::open(&ref_dir, &expect(&id)).unwrap();
                // Ties across the boundary in the reference's logits (the case the rule is for).
                let all = full(&f.rows);
                let ties = (0..f.rows.len() * T)
                    .filter(|&i| {
                        let mut z = all[i * V..(i + 1) * V].to_vec();
                        z.sort_by(|a, b| b.total_cmp(a));
                        z[k - 1] == z[k]
                    })
                    .count();
                if name == "bf16" {
                    assert!(ties > 0, "bf16 logits should tie at the boundary somewhere");
                }
                for slack in [TIE_SLACK, 0] {
                    let dir = tmp(&format!("dev-{name}-{k}-{slack}"));
                    let fwd = |rows: &[usize]| t.forward(f.data.batch(rows, &dev).inputs);
                    build(
                        &dir,
                        &id,
                        &f.data,
                        device_select(fwd, &f.data, &id, slack, crate::profile::PhaseTimer::from_env(&dev)),
                        &opts(),
                    )
                    .unwrap();
                    let got = CacheReader::open(&dir, &expect(&id)).unwrap();
                    for r in 0..f.data.n_rows() {
                        let (a, b) = (got.row(r).unwrap(), want.row(r).unwrap());
                        assert_eq!(a.len(), b.len());
                        for (p, (x, y)) in a.iter().zip(&b).enumerate() {
                            let at = format!("{name} k {k} slack {slack} row {r} pos {p}");
                            assert_eq!(x.ids, y.ids, "{at}");
                            assert_eq!(x.logits, y.logits, "{at}");
                            for j in 0..2 {
                                assert!(
                                    (x.lse[j].to_bits() as i64 - y.lse[j].to_bits() as i64).abs() <= lse_ulps,
                                    "{at}: lse {} vs {}",
                                    x.lse[j],
                                    y.lse[j]
                                );
                                let (hx, hy) = (
                                    half::f16::from_f32(x.log_tail[j]).to_bits() as i64,
                                    half::f16::from_f32(y.log_tail[j]).to_bits() as i64,
                                );
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
