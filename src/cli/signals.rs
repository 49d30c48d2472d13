//! SIGINT and SIGTERM: the first one asks the running stage to stop at its next safe point
//! (a training step's end with a checkpoint, a data or cache shard, an evaluation batch); a
//! second one of either leaves at once. The exit code says which signal: 130 for SIGINT, 143
//! for SIGTERM (128 + the signal number, as shells report it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

#[cfg(unix)]
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}

/// Async-signal-safe: one atomic swap, or `_exit`.
#[cfg(unix)]
extern "C" fn on_signal(sig: i32) {
    if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: `_exit` is async-signal-safe; a second signal means "now".
        unsafe { _exit(128 + sig) }
    }
}

/// Install the handlers once and return the flag the pipeline polls; a thread turns the first
/// signal into the flag and a line on stderr.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    // SAFETY: `on_signal` only touches an atomic or calls `_exit`.
    unsafe {
        signal(SIGINT, on_signal as extern "C" fn(i32) as usize);
        signal(SIGTERM, on_signal as extern "C" fn(i32) as usize);
    }
    let f = flag.clone();
    std::thread::spawn(move || {
        loop {
            let sig = RECEIVED.load(Ordering::SeqCst);
            if sig != 0 {
                f.store(true, Ordering::SeqCst);
                crate::util::STOP.store(true, Ordering::SeqCst);
                let name = if sig == SIGTERM { "SIGTERM" } else { "Ctrl-C" };
                eprintln!("\n{name}: stopping at the next safe point (a second signal quits now)...");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    flag
}

/// The exit code of a stop: 143 after SIGTERM, else 130.
pub fn interrupted_exit_code() -> i32 {
    match RECEIVED.load(Ordering::SeqCst) {
        SIGTERM => 128 + SIGTERM,
        _ => 128 + SIGINT,
    }
}
