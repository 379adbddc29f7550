#!/usr/bin/env bash
# Run ON THE GPU MACHINE: builds libggml-cuda.so from the carried ggml source
# (gpu-carry/ggml) into gpu-carry/bin, for the GPU's architecture. ~3.5 min on
# 16 cores; bench.sh and train.sh start it in the background (at low CPU
# priority, so that a training run beside it keeps its pace).
# CUDA graphs are on, as in llama.cpp's own build (ggml's standalone default is
# off): a decoding pass is then one graph launch instead of hundreds of kernel
# launches, for our engine and for the llama.cpp we compare with alike.
# CUDA_FA=OFF leaves out flash attention's kernels (most of the build's time):
# enough for --exact with its f32 cache, whose passes do not use them.
# The build tree /tmp/ggml-build stays while the machine is warm: ninja then
# recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/gpu-carry/bin
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
t0=$(date +%s)
mkdir -p "$bin"
cmake -S gpu-carry/ggml -B /tmp/ggml-build -G Ninja -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON \
    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_CUDA_GRAPHS=ON -DGGML_CUDA_FA="${CUDA_FA:-ON}" -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
    -DCMAKE_CUDA_ARCHITECTURES=$arch -DCMAKE_BUILD_TYPE=Release >/tmp/cmake.log 2>&1
nice -n 19 cmake --build /tmp/ggml-build --target ggml-cuda -j"$(nproc)" >>/tmp/cmake.log 2>&1
cp /tmp/ggml-build/bin/libggml-cuda.so "$bin/" 2>/dev/null || cp "$(find /tmp/ggml-build -name 'libggml-cuda.so' | head -1)" "$bin/"
echo "ninja: $(grep -c '^\[' /tmp/cmake.log || true) steps logged"
echo "ggml-cuda built in $(( $(date +%s) - t0 )) s"
