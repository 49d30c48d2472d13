//! With the `tch` feature, compiles the one libtorch call `tch` does not bind
//! (src/kernels/torch/flash.cpp) against the libtorch that `tch` builds with (`LIBTORCH`).
//! The default build compiles nothing here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    flash();
}

#[cfg(feature = "tch")]
fn flash() {
    let src = "src/kernels/torch/flash.cpp";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = std::path::PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH: the libtorch to build against (README, \"GPU training\"); the same one tch uses"),
    );
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file(src)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("distill_flash");
}
