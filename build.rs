//! Records the git commit bertlab is built from (for run provenance), when built in a checkout;
//! with the `cuda` feature, compiles bertlab's GPU kernels (src/model/cuda_kernels.cu) to PTX
//! with nvcc (found through CUDA_ROOT, CUDA_PATH or PATH; scripts/cuda-toolkit.sh provides one).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=BERTLAB_GIT_COMMIT={commit}");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
}

fn compile_kernels() {
    let source = "src/model/cuda_kernels.cu";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    let nvcc = ["CUDA_ROOT", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("bin/nvcc"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let output = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("bertlab_kernels.ptx");
    // PTX for compute capability 7.5 (the oldest CUDA 13 supports): the driver compiles it for the GPU that runs it.
    let status = Command::new(&nvcc)
        .args(["--ptx", "-arch=compute_75", "-O3", "-std=c++17", "-o"])
        .arg(&output)
        .arg(source)
        .status()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} to compile {source}: {error} (the `cuda` feature needs nvcc: see scripts/cuda-toolkit.sh)",
                nvcc.display()
            )
        });
    assert!(status.success(), "nvcc failed on {source}");
}
