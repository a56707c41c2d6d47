//! With the `tch` feature: compiles `csrc/libtorch_shim.cpp`, the three libtorch backward kernels
//! that the tch crate does not bind (see `src/libtorch.rs`), against the headers of the libtorch
//! torch-sys found. Without it, nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    libtorch_shim();
}

#[cfg(feature = "tch")]
fn libtorch_shim() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-changed=csrc/libtorch_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // torch-sys (`links = "tch"`) publishes the libtorch library folder it linked; the headers
    // sit beside it, in libtorch's own layout and in a PyTorch wheel's alike.
    // (`DEP_<links>_<key>`: links = "tch", key = libtorch_lib.)
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys publishes DEP_TCH_LIBTORCH_LIB when it links libtorch"),
    );
    let include = lib
        .parent()
        .expect("the libtorch library folder has a parent")
        .join("include");
    // The same C++ ABI switch torch-sys compiles its own wrapper with (its default is 1, the
    // ABI of PyTorch's wheels since 2.7).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .file("csrc/libtorch_shim.cpp")
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("oodforge_libtorch_shim");
}
