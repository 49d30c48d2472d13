//! Offline stand-in for `cubecl-llvm` 0.11.3; see README.md.
//!
//! `cubecl-cuda` always links the LLVM backend, but with its `cpp` feature it compiles every
//! kernel through NVRTC instead, so only the names it mentions have to exist here. The compiler
//! refuses every kernel rather than pretending, so choosing `CudaBackend::Llvm` fails loudly.

#[cfg(feature = "nvptx")]
pub mod nvptx;
pub mod shared;
pub mod target;

#[cfg(feature = "nvptx")]
pub use shared::NvptxModule;
pub use shared::{PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;
