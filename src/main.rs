fn main() {
    restore_sigpipe();
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
