//! Benchmarks behind `distill bench` ([`layers`]), `distill bench-attention` ([`attention`]),
//! `distill bench-loss` ([`loss`]),
//! `distill bench-cache` ([`cache`]) and `distill bench-train` ([`train`]). They are compiled into the library so the CLI can call
//! them, but nothing on the training path uses this module: a benchmark may hard-code a device
//! or a model shape, training may not.
//!
//! Memory is measured as the peak resident set of a fresh child process (`distill <cmd> --one
//! ...`) per measurement, so one measurement's peak is never another's; the protocol's two ends
//! (run a child, read its `ms peak_mib` line) live here.

pub mod attention;
pub mod cache;
pub mod layers;
pub mod loss;
pub mod train;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// Current resident memory of this process (Linux `VmRSS`), in MiB.
pub fn rss_mib() -> Option<f64> {
    proc_status_mib("VmRSS:")
}

fn proc_status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Reset this process's peak resident memory to its current size (Linux `clear_refs` 5), so
/// that a later [`peak_rss_mib`] measures what came after.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Run `exe args..` and read the two numbers a `--one` child prints (milliseconds, peak MiB).
/// A child that fails (out of memory, say) or prints anything else gives `None`: the sweep
/// reports that point as failed and goes on.
pub fn measure_in_child(exe: &Path, args: &[String]) -> Option<(f64, f64)> {
    let out = Command::new(exe).args(args).output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>());
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

/// This binary, to re-run as the measuring child.
pub fn current_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().map_err(|e| Error::runtime(e.to_string()))
}

/// Append already formatted JSON lines to `path` (created if missing), so that repeated runs
/// build one file of results.
pub fn append_jsonl(path: &Path, lines: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    f.write_all(lines.as_bytes()).map_err(|e| Error::runtime(format!("{}: {e}", path.display())))
}
