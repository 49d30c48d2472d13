//! The device a run computes on. A neutral home: data preparation (the teacher-perplexity
//! filter), the teacher and the pipeline all need it without importing one another.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// `run.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
    Wgpu,
    /// LibTorch on the first CUDA GPU (cargo feature `tch`).
    Libtorch,
    /// LibTorch's CPU kernels (cargo feature `tch`).
    #[serde(rename = "libtorch-cpu")]
    LibtorchCpu,
}

impl Backend {
    /// The cargo feature that compiles this backend in.
    pub fn cargo_feature(self) -> &'static str {
        match self {
            Backend::Cpu => "default",
            Backend::Cuda => "cuda",
            Backend::Wgpu => "wgpu",
            Backend::Libtorch | Backend::LibtorchCpu => "tch",
        }
    }

    /// Whether this binary was built with the cargo feature the backend needs.
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Libtorch | Backend::LibtorchCpu => cfg!(feature = "tch"),
        }
    }
}

// burn marks LibTorch deprecated in favour of CubeCL; it is our measured GPU route (BENCHMARKS.md).
#[allow(deprecated)]
pub fn device_for(backend: Backend) -> Device {
    match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "tch")]
        Backend::Libtorch => Device::libtorch_cuda(0),
        #[cfg(feature = "tch")]
        Backend::LibtorchCpu => Device::libtorch(),
        // Validation refuses backends that are not compiled in.
        _ => Device::flex(),
    }
}
