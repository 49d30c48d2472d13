//! Small file helpers shared by the run-directory writers: everything we write is written to a
//! temporary file, fsynced and renamed, so a crash never leaves a half-written file behind.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// `acc += x`, starting from nothing: how device-side sums build up without a read-back.
pub fn accumulate<const D: usize>(acc: &mut Option<burn::tensor::Tensor<D>>, x: burn::tensor::Tensor<D>) {
    *acc = Some(match acc.take() {
        Some(a) => a + x,
        None => x,
    });
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let run = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename itself must reach the disk too.
            if let Ok(d) = std::fs::File::open(dir) {
                d.sync_all().ok();
            }
        }
        Ok(())
    };
    run().map_err(|e| Error::runtime(format!("{}: cannot write: {e}", path.display())))
}

/// Copy `src` to `dst` through [`write_atomic`] (std::fs::copy would overwrite `dst` in place).
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<()> {
    let bytes = std::fs::read(src).map_err(|e| Error::input(format!("{}: {e}", src.display())))?;
    write_atomic(dst, &bytes)
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).expect("serializable");
    write_atomic(path, s.as_bytes())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let s = crate::error::read_to_string(path)?;
    serde_json::from_str(&s).map_err(|e| Error::input(format!("{}: corrupt or unexpected JSON: {e}", path.display())))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// Little-endian f32 values from raw tensor bytes (safetensors stores little-endian).
pub fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Raw little-endian bytes of f32 values.
pub fn f32s_to_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write named f32 tensors `(name, shape, values)` as one safetensors file, atomically.
pub fn write_f32_safetensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(n, s, v)| (n, s, f32s_to_le(&v))).collect();
    let views = bytes.iter().map(|(n, s, b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
            .map_err(|e| Error::runtime(format!("{}: tensor `{n}`: {e}", path.display())))?;
        Ok((n.clone(), view))
    });
    let views = views.collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    write_atomic(path, &data)
}

/// safetensors bytes with the header's keys in sorted order. `safetensors::serialize` writes the
/// `__metadata__` map in `HashMap` order, which changes from run to run: the same weights must
/// give the same file. Offsets are relative to the data, so only the header is rewritten
/// (padded with spaces to 8 bytes, as the format asks).
pub fn canonical_safetensors(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors wrote a JSON header");
    let mut text = serde_json::to_vec(&header).expect("JSON");
    // Nested maps (the metadata) are serde_json's BTreeMap-backed `Map`: sorted too.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// A progress bar over `len` units (hidden when `quiet`): position, rate and ETA.
pub fn progress_bar(prefix: &str, len: u64, quiet: bool) -> indicatif::ProgressBar {
    let pb = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(len) };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {human_pos}/{human_len} tokens {per_sec} | ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// `f` over `items` on all cores (contiguous parts, one thread each), results in input order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_map_leaving(items, 0, f)
}

/// [`par_map`] on all cores but `spare` (at least one thread): for work that runs beside a
/// thread that must keep a core, such as the one feeding a GPU.
pub fn par_map_leaving<T: Sync, R: Send>(items: &[T], spare: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(spare).max(1);
    let per = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> =
            items.chunks(per).map(|part| sc.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("worker thread")).collect()
    })
}

/// Set by SIGINT/SIGTERM (the CLI's signal thread) for the long loops that take no stop flag
/// of their own: data preparation reads it per document and stops with `Error::Interrupted`
/// (the stage starts over on resume; nothing of it is kept half-done).
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
mod profile_tests {
    /// The tests build our crate with overflow checks (the `test` profile), though the
    /// quickstart's `dev` build leaves them out for speed (Cargo.toml).
    #[test]
    fn overflow_checks_are_on_in_the_tests() {
        let x: u8 = std::hint::black_box(255);
        assert!(std::panic::catch_unwind(|| x + 1).is_err(), "255u8 + 1 must panic under the test profile");
    }
}
