#!/usr/bin/env bash
# Makes a CUDA 13.0 toolkit from PyPI wheels, enough to build bertlab's `cuda` feature on a machine
# without a GPU or a system CUDA, and prints the environment to build with:
#
#   eval "$(scripts/cuda-toolkit.sh)" && cargo build --release --features cuda
#
# The toolkit lands in $BERTLAB_CUDA_TOOLKIT (default target/cuda-13.0, git-ignored); a second call
# reuses it. Why each piece is needed:
# - nvcc, its crt headers and nvvm compile candle's kernels; cccl holds the C++ headers they include.
# - candle links dynamically (cudarc's `dynamic-linking`) against cudart, cublas, cublasLt, curand
#   and nvrtc. The wheels ship only versioned names (libcublas.so.13); the linker needs the bare
#   names, so links are made beside them.
# - libcuda belongs to the driver and no wheel ships it: a stub with the soname libcuda.so.1 that
#   defines every driver function cudarc declares stands in at link time; the real driver replaces
#   it when the binary runs on a GPU machine.
# Versions stay at CUDA 13.0: the GPU machines run driver 580 (CUDA 13.0), and a driver cannot
# compile PTX from a newer nvcc. CUDA_COMPUTE_CAP defaults to 90 (H100/H200); set it to build for
# another GPU generation.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolkit="${BERTLAB_CUDA_TOOLKIT:-$root/target/cuda-13.0}"
python="${PYTHON:-python3}"

WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.0.19
    nvidia-curand==10.4.0.35
)

if [ ! -f "$toolkit/.complete" ]; then
    echo "cuda-toolkit: fetching CUDA 13.0 wheels into $toolkit" >&2
    rm -rf "$toolkit"
    mkdir -p "$toolkit/wheels" "$toolkit/unpacked"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$toolkit/wheels" \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "${WHEELS[@]}" >&2
    for wheel in "$toolkit"/wheels/*.whl; do
        "$python" -m zipfile -e "$wheel" "$toolkit/unpacked" >&2
    done
    # Every wheel unpacks into nvidia/cu13/{bin,include,lib,nvvm}: one toolkit-shaped tree.
    tree="$toolkit/unpacked/nvidia/cu13"
    chmod +x "$tree"/bin/* "$tree"/nvvm/bin/* 2>/dev/null || true
    [ -e "$tree/lib64" ] || ln -s lib "$tree/lib64"
    for library in "$tree"/lib/lib*.so.*; do
        bare="${library%%.so.*}.so"
        [ -e "$bare" ] || ln -s "$(basename "$library")" "$bare"
    done
    # The stub libcuda: every cu* function cudarc's driver bindings declare, as an empty function.
    registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    cudarc="cudarc-$(grep -A1 '^name = "cudarc"$' "$root/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')"
    bindings="$(ls -d "$registry"/*/"$cudarc"/src/driver/sys/mod.rs 2>/dev/null | tail -1 || true)"
    if [ -z "$bindings" ]; then
        (cd "$root" && cargo fetch --locked >&2)
        bindings="$(ls -d "$registry"/*/"$cudarc"/src/driver/sys/mod.rs 2>/dev/null | tail -1 || true)"
    fi
    if [ -z "$bindings" ]; then
        echo "cuda-toolkit: cudarc's sources are not in $registry even after 'cargo fetch'" >&2
        exit 1
    fi
    mkdir -p "$toolkit/stub"
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$bindings" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' \
        | sort -u > "$toolkit/stub/libcuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/stub/libcuda.so" "$toolkit/stub/libcuda.c"
    ln -s libcuda.so "$toolkit/stub/libcuda.so.1"
    "$tree/bin/nvcc" --version >&2
    touch "$toolkit/.complete"
fi

tree="$toolkit/unpacked/nvidia/cu13"
cat <<EOF
export CUDA_ROOT="$tree"
export CUDA_PATH="$tree"
export PATH="$tree/bin:\$PATH"
export LIBRARY_PATH="$tree/lib:$toolkit/stub\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
EOF
