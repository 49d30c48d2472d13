//! NVPTX target.

// Copied unchanged from the real crate: cubecl-cuda computes it from the driver version even
// when the C++ backend is selected, and it keys the kernel cache on it.
pub mod ptx_version;
