#!/usr/bin/env bash
# Run ON THE GPU MACHINE: builds libggml-cuda.so with our kernels into
# gpu-carry/bin from the carried, unpatched ggml source (gpu-carry/ggml)
# through kernels/cuda/CMakeLists.txt: the CMake step of
# `cargo build --features cuda`, here as the loadable module that the
# dynamic-backends binaries load, for the GPU's architecture (the project's
# default when no CMAKE_CUDA_ARCHITECTURES is given). ~3.5 min on 16 cores;
# bench.sh and train.sh start it in the background (at low CPU priority, so
# that a training run beside it keeps its pace).
# Then orthrus-module-check (kernels/cuda/module-check.cpp) loads the module,
# with the ggml built beside it (not gpu-carry/bin's, same source),
# and checks that our matmul runs in it; the script fails when it does not.
# CUDA_FA=OFF leaves out ggml's flash attention kernels (most of the build's
# time): enough for --exact with its f32 cache, whose passes do not use them.
# The build tree /tmp/ggml-build stays while the machine is warm: ninja then
# recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/gpu-carry/bin
t0=$(date +%s)
mkdir -p "$bin"
cmake -S kernels/cuda -B /tmp/ggml-build -G Ninja -DGGML_SOURCE_DIR="$PWD/gpu-carry/ggml" \
    -DORTHRUS_GGML_CUDA_MODULE=ON -DGGML_CUDA_FA="${CUDA_FA:-ON}" -DCMAKE_BUILD_TYPE=Release >/tmp/cmake.log 2>&1
grep -E "^-- orthrus:" /tmp/cmake.log || true
nice -n 19 cmake --build /tmp/ggml-build --target ggml-cuda -j"$(nproc)" >>/tmp/cmake.log 2>&1
# Apart: a check that does not compile must not stop the library.
nice -n 19 cmake --build /tmp/ggml-build --target orthrus-module-check -j"$(nproc)" >>/tmp/cmake.log 2>&1 || echo "orthrus-module-check did not build"
cp /tmp/ggml-build/lib/libggml-cuda.so "$bin/"
echo "ninja: $(grep -c '^\[' /tmp/cmake.log || true) steps logged"
echo "ggml-cuda built in $(( $(date +%s) - t0 )) s"
env -u LD_LIBRARY_PATH /tmp/ggml-build/bin/orthrus-module-check /tmp/ggml-build/lib/libggml-cuda.so
