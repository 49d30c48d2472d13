//! The device a run computes on. A neutral home: data preparation (the teacher-perplexity
//! filter), the teacher and the pipeline all need it without importing one another.

use burn::tensor::Device;

use crate::recipe::Backend;

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
