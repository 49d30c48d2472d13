//! What a device advertises, narrowed to what the LLVM backend lowers for it.

use cubecl_core::ir::DeviceProperties;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    #[cfg(feature = "nvptx")]
    Nvptx,
}

/// Leaves `props` as they are. cubecl-cuda calls this only when the LLVM backend is selected,
/// and this stand-in's LLVM backend compiles nothing, so narrowing would not make any kernel
/// work; the compile error names the real cause instead.
pub fn restrict_features(props: &mut DeviceProperties, target: GpuTarget) {
    let _ = (props, target);
}
