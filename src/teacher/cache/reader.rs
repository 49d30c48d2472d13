//! Reading a cache: [`CacheReader`] opens one (refusing another run's cache and any shard that
//! fails its checks), decodes rows from the memory-mapped shards and turns them into the
//! loss's top-k targets at the training temperature.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::format::{
    EMPTY_TAIL, FORMAT_VERSION, HEADER, MANIFEST, Manifest, TokenTopK, check_shard, decode_token, read_manifest,
    shard_name,
};
use crate::data::pack::Packed;
use crate::error::{Error, Result};
use crate::teacher::bits::BitReader;
use crate::teacher::codec::TailMode;

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
        let refuse = |what: &str, have: String, want: String| {
            Error::input(format!(
                "teacher cache {}: made for {what} {have}, but this run has {want}; rebuild it with `distill cache-teacher` (or point cache.path elsewhere)",
                dir.display()
            ))
        };
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
            return Err(refuse(
                "data",
                format!("{} ({} rows of {})", short(&id.data_hash), id.n_rows, id.seq_len),
                format!("{} ({} rows of {})", short(expect.data_hash), expect.n_rows, expect.seq_len),
            ));
        }
        // Sizes from the file, checked before anything is divided by or sized from them.
        let mpath = dir.join(MANIFEST);
        if id.rows_per_shard == 0 {
            return Err(Error::input(format!(
                "{}: rows_per_shard is 0; expected a positive integer (a corrupt manifest: rebuild the cache with `distill cache-teacher`)",
                mpath.display()
            )));
        }
        if id.k == 0 || id.k > id.vocab_size {
            return Err(Error::input(format!(
                "{}: k = {}; expected 1 to the vocabulary ({}) (a corrupt manifest: rebuild the cache with `distill cache-teacher`)",
                mpath.display(),
                id.k,
                id.vocab_size
            )));
        }
        if manifest.shards.len() != id.n_shards() {
            return Err(Error::input(format!(
                "{}: lists {} shards, expected {}",
                dir.join(MANIFEST).display(),
                manifest.shards.len(),
                id.n_shards()
            )));
        }
        let mut shards = Vec::new();
        for (i, s) in manifest.shards.iter().enumerate() {
            let p = dir.join(&s.file);
            let f = std::fs::File::open(&p)
                .map_err(|e| Error::input(format!("{}: missing teacher-cache shard: {e}", p.display())))?;
            // SAFETY: the file is opened read-only and we never write through the map; a
            // concurrent writer could change what we read, which the checksum below catches
            // for the state at open time.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
            let (first, rows, sha) = check_shard(&map, id, &p)?;
            if first != (i * id.rows_per_shard) as u64 || rows != s.rows || sha != s.sha256 {
                return Err(Error::input(format!(
                    "{}: does not match {} (shard {i})",
                    p.display(),
                    dir.join(MANIFEST).display()
                )));
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
        let off = |i: usize| {
            u64::from_le_bytes(map[HEADER + 8 * i..HEADER + 8 * i + 8].try_into().expect("8 bytes")) as usize
        };
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
            .map(|_| {
                decode_token(&mut rd, id.k.min(id.vocab_size), id.values, id.temperatures.len(), id.vocab_size)
                    .ok_or_else(corrupt)
            })
            .collect()
    }

    /// The stored temperature index for `tau`, if its log-sum-exp is in the cache.
    pub fn temperature_index(&self, tau: f64) -> Option<usize> {
        self.manifest.id.temperatures.iter().position(|&t| (t - tau).abs() < 1e-9)
    }

    /// Teacher targets for `rows` (each `seq_len` positions) at temperature `tau`. The cache
    /// holds the positions in the loss only, `keep[i]` those of `rows[i]`
    /// ([`Packed::loss_positions`](crate::data::pack::Packed::loss_positions)); the others
    /// (padding, prompts, document boundaries) get a harmless uniform target that the loss
    /// mask removes.
    pub fn batch(&self, rows: &[usize], keep: &[Vec<usize>], tau: f64, tail: TailMode) -> Result<TopKHost> {
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
        let uniform = |ids: &mut Vec<i64>, logp: &mut Vec<f32>, tails: &mut Vec<f32>| {
            ids.extend(0..k as i64);
            logp.extend(std::iter::repeat_n(-(k as f32).ln(), k));
            tails.push(EMPTY_TAIL);
        };
        for (&r, keep) in rows.iter().zip(keep) {
            let toks = self.row(r)?;
            if toks.len() != keep.len() || keep.last().is_some_and(|&p| p >= t) {
                return Err(Error::input(format!(
                    "teacher cache {}: row {r} holds {} positions, the data has {} in the loss; rebuild the cache",
                    self.dir.display(),
                    toks.len(),
                    keep.len()
                )));
            }
            let mut at = 0;
            for (tok, &p) in toks.iter().zip(keep) {
                while at < p {
                    uniform(&mut ids, &mut logp, &mut tails);
                    at += 1;
                }
                at += 1;
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
            for _ in at..t {
                uniform(&mut ids, &mut logp, &mut tails);
            }
        }
        Ok(TopKHost { n, k, ids, logp, tail: ti.map(|_| tails) })
    }
}

/// The mean divergence over the real tokens of `rows`, computed from full teacher logits and
/// from the cache: how much the cache changes the objective. `teacher`, `student`: logits of
/// those rows, (rows x seq_len x vocab) flat.
#[allow(clippy::too_many_arguments)]
pub fn divergence_online_and_cached(
    reader: &CacheReader,
    data: &Packed,
    rows: &[usize],
    teacher: &[f32],
    student: &[f32],
    tau: f64,
    tail: TailMode,
    divergence: crate::kd_loss::Divergence,
    dev: &Device,
) -> Result<(f64, f64)> {
    use crate::kd_loss::{KdConfig, Target, kd_loss, kd_loss_to};
    let (t, v) = (reader.manifest.id.seq_len, reader.manifest.id.vocab_size);
    let cfg = KdConfig { alpha: 0.0, temperature: tau, chunk_tokens: 256, divergence };
    let (mut on, mut ca, mut n) = (0.0, 0.0, 0.0);
    for (ci, chunk) in rows.chunks(16).enumerate() {
        let nt = chunk.len() * t;
        let span = ci * 16 * t * v..(ci * 16 * t + nt) * v;
        let batch = data.batch(chunk, dev);
        let st = || Tensor::<2>::from_data(TensorData::new(student[span.clone()].to_vec(), [nt, v]), dev);
        let te = Tensor::<2>::from_data(TensorData::new(teacher[span.clone()].to_vec(), [nt, v]), dev);
        let a = kd_loss(st(), Some(te), batch.targets.clone(), batch.mask.clone(), cfg);
        let keep: Vec<Vec<usize>> = chunk.iter().map(|&r| data.loss_positions(r)).collect();
        let host = reader.batch(chunk, &keep, tau, tail)?;
        let b = kd_loss_to(st(), Some(Target::TopK(host.to_device(dev))), batch.targets, batch.mask, cfg);
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
mod round_trip {
    use super::super::test_fixture::*;
    use super::*;
    use crate::kd_loss::Divergence;
    use crate::teacher::codec::ValueCodec;

    fn kl_pair(f: &Fixture, reader: &CacheReader, tau: f64, tail: TailMode, d: Divergence) -> (f64, f64) {
        divergence_online_and_cached(reader, &f.data, &f.rows, &f.teacher, &f.student, tau, tail, d, &Device::flex())
            .unwrap()
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

    /// Chat data: the cache holds only the positions in the loss, reports the rest as skipped,
    /// and its targets land back on their positions (the divergences equal the online ones).
    #[test]
    fn a_cache_of_loss_positions_only_serves_them_in_place() {
        use crate::data::config::Packing;
        use crate::data::tokens::{DOC_START, LOSS};
        let f = fixture();
        let n = f.data.n_tokens();
        // The fixture's tokens (drawn as `fixture` draws them).
        let mut rng = crate::rng::SplitMix(1);
        let toks: Vec<u32> = (0..n).map(|_| rng.below(V) as u32).collect();
        // Prompt-like stretches out of the loss, and documents starting every 11 tokens.
        let flags: Vec<u8> =
            (0..n).map(|i| if (i / 5) % 3 == 0 { 0 } else { LOSS } | if i % 11 == 0 { DOC_START } else { 0 }).collect();
        for packing in [Packing::Concat, Packing::Documents] {
            let data = Packed::build(toks.clone(), Some(flags.clone().into()), T, 0, packing);
            let g = Fixture { data, teacher: f.teacher.clone(), student: f.student.clone(), rows: f.rows.clone() };
            let dir = tmp(&format!("loss-only-{packing:?}"));
            let m = build_cache(&g, &dir, V, ValueCodec::F16);
            let kept: usize = g.rows.iter().map(|&r| g.data.row(r).2.iter().filter(|&&x| x > 0.0).count()).sum();
            assert_eq!((m.tokens as usize, (m.tokens + m.skipped) as usize), (kept, n - 1), "{packing:?}");
            assert!(kept < (n - 1) * 3 / 4, "{packing:?}: a third or more is out of the loss");
            let reader = CacheReader::open(&dir, &expect(&m.id)).unwrap();
            for d in [Divergence::ForwardKl, Divergence::ReverseKl] {
                let (on, ca) = kl_pair(&g, &reader, 1.0, TailMode::Other, d);
                assert!((on - ca).abs() < 2e-3 * on.max(0.1), "{packing:?} {d:?}: online {on}, cache {ca}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
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
                println!(
                    "k {k:>4} {values:?}: {:.1} bytes/token, KL online {on:.4}, other-bucket rel. error {eo:.4}, renormalized {er:.4}",
                    m.bytes_per_token()
                );
                // Renormalized, the cache gives KL between teacher and student each restricted
                // to the teacher's top k: computed here in f64 from the dense logits.
                let want = restricted_kl(&f, k);
                let tol = if values == ValueCodec::F16 { 2e-3 } else { 2e-2 };
                assert!(
                    (renorm - want).abs() < tol * want.max(0.1),
                    "k = {k} {values:?}: renormalized {renorm} vs restricted reference {want}"
                );
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
        for (field, msg) in
            [("teacher", "teacher"), ("data", "data"), ("tokenizer", "tokenizer"), ("dtype", "teacher dtype")]
        {
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
        let e =
            CacheReader::open(&dir, &Expect { vocab_size: id.vocab_size, ..expect(&m.id) }).err().unwrap().to_string();
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
mod crafted {
    use super::super::format::HASHED;
    use super::super::test_fixture::*;
    use super::*;
    use crate::teacher::cache::CacheIdentity;
    use crate::teacher::codec::ValueCodec;
    use crate::util::sha256_hex;

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
        r.unwrap_or_else(|p| {
            panic!(
                "panicked instead of refusing: {:?}",
                p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            )
        })
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
            (
                "rows overflow",
                Box::new(move |b: &mut Vec<u8>| set_u64(b, rows_at, u64::MAX / 4)) as Box<dyn FnOnce(&mut Vec<u8>)>,
            ),
            ("rows huge", Box::new(move |b: &mut Vec<u8>| set_u64(b, rows_at, 1 << 40))),
            // Row 1 starts after row 2 (non-monotone), the total still adds up.
            (
                "non-monotone",
                Box::new(move |b: &mut Vec<u8>| {
                    let end = u64::from_le_bytes(b[table + 16..table + 24].try_into().unwrap());
                    set_u64(b, table + 8, end + 5);
                }),
            ),
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
