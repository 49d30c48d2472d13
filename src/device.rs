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
}

impl Backend {
    /// Whether this binary was built with the cargo feature the backend needs.
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

pub fn device_for(backend: Backend) -> Device {
    match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        // Validation refuses backends that are not compiled in.
        _ => Device::flex(),
    }
}
