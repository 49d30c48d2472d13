fn main() {
    restore_sigpipe();
    ignore_sigxfsz();
    std::process::exit(distill::cli::main());
}

/// Rust ignores SIGPIPE, so `distill logits ... | head` would panic on the closed pipe; a
/// command-line tool should end quietly instead, as `cat` does.
fn restore_sigpipe() {
    disposition(13, 0); // SIGPIPE, SIG_DFL
}

/// Past a file-size limit (`ulimit -f`) the kernel's default is to kill the process with
/// SIGXFSZ; ignored, the write fails with EFBIG instead, which becomes an error naming the
/// file, and the run stops cleanly with its last checkpoint intact.
fn ignore_sigxfsz() {
    disposition(25, 1); // SIGXFSZ, SIG_IGN
}

#[cfg(unix)]
fn disposition(signum: i32, handler: usize) {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    // SAFETY: installs a default or ignore disposition before any other thread exists.
    unsafe {
        signal(signum, handler);
    }
}

#[cfg(not(unix))]
fn disposition(_: i32, _: usize) {}
