#!/usr/bin/env bash
# A CUDA 13.0 toolkit from NVIDIA's wheels on PyPI, for `--features cuda`
# builds on a machine that has no toolkit (no GPU is needed to build):
#
#   bash scripts/cuda-toolkit-pypi.sh [DIR]     # default ~/.cache/orthrus/cuda-13.0
#   PATH=DIR/bin:$PATH CUDAToolkit_ROOT=DIR CMAKE_CUDA_ARCHITECTURES=86 \
#       cargo build --release -p orthrus-engine -p orthrus-server --features cuda
#
# Name the GPU's architecture (no GPU is visible to detect it). The binary
# loads libcudart.so.13, libcublas.so.13 and libcuda.so.1 where it runs: a CUDA
# 13 driver and runtime there. The wheels hold no lib/stubs/libcuda.so, the
# driver library the toolkit offers for linking only; this script makes one
# from cuda.h's declarations, as that stub is (functions of the same names,
# never called: the real driver is loaded at run time). About 530 MB of wheels.
set -euo pipefail
dir=${1:-$HOME/.cache/orthrus/cuda-13.0}
wheels=(
    nvidia-cuda-nvcc==13.0.88   # nvcc, ptxas, fatbinary, nvlink
    nvidia-cuda-crt==13.0.88    # include/crt: nvcc's own headers
    nvidia-nvvm==13.0.88        # cicc, libdevice
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85   # CUB, Thrust (ggml-cuda's sorts)
    nvidia-cublas==13.0.2.14
)
command -v python3 > /dev/null || { echo "cuda-toolkit-pypi.sh: needs python3 with pip" >&2; exit 1; }
if [ -x "$dir/bin/nvcc" ] && [ -f "$dir/lib/stubs/libcuda.so" ]; then
    echo "$dir: already there"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp/wheels" "${wheels[@]}"
mkdir -p "$tmp/x"
for w in "$tmp"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$tmp/x"
done
root=$tmp/x/nvidia/cu13
[ -f "$root/bin/nvcc" ] || { echo "cuda-toolkit-pypi.sh: the wheels hold no nvidia/cu13/bin/nvcc" >&2; exit 1; }
chmod +x "$root"/bin/* "$root"/nvvm/bin/*
# The unversioned names a linker looks for, and lib64 as FindCUDAToolkit's first guess.
for l in cudart cublas cublasLt; do
    ln -sf "lib$l.so.13" "$root/lib/lib$l.so"
done
ln -sfn lib "$root/lib64"
mkdir -p "$root/lib/stubs"
gcc -E -P -I "$root/include" "$root/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' |
    sed 's/[[:space:](]//g' | sort -u | awk '{print "int " $1 "(void) { return 0; }"}' > "$tmp/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$tmp/stub.c"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$root" "$dir"
"$dir/bin/nvcc" --version | tail -1
echo "CUDA 13.0 in $dir: PATH=$dir/bin:\$PATH CUDAToolkit_ROOT=$dir cargo build ... --features cuda"
