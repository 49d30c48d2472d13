fn main() {
    restore_sigpipe();
    ignore_sigxfsz();
    std::process::exit(distill::cli::main());
}

/// Rust ignores SIGPIPE, so `distill logits ... | head` would panic on the closed pipe; a
/// command-line tool should end quietly instead, as `cat` does.
#[cfg(unix)]
fn restore_sigpipe() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: installs the default disposition for SIGPIPE before any other thread exists.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

/// Past a file-size limit (`ulimit -f`) the kernel's default is to kill the process with
/// SIGXFSZ; ignored, the write fails with EFBIG instead, which becomes an error naming the
/// file, and the run stops cleanly with its last checkpoint intact.
#[cfg(unix)]
fn ignore_sigxfsz() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGXFSZ: i32 = 25;
    const SIG_IGN: usize = 1;
    // SAFETY: as above, before any other thread exists.
    unsafe {
        signal(SIGXFSZ, SIG_IGN);
    }
}

#[cfg(not(unix))]
fn ignore_sigxfsz() {}
