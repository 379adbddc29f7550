#!/usr/bin/env bash
# Run ON THE GPU MACHINE: builds llama.cpp's own llama-bench with CUDA from
# llama-src.tar.xz (fetch-llama.sh) into /tmp/lb (about 4 minutes on 16 cores,
# at low priority). Not beside our ggml-cuda build: on 2026-12-01 the two
# together took 581 s (ggml-cuda) and 611 s (llama-bench), where ggml-cuda
# alone takes 300-330 s; build it in a call of its own or after wait_for_cuda.
# CUDA graphs are llama.cpp's default there.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x /tmp/lb/bin/llama-bench ] && { echo "llama-bench already built"; exit 0; }
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
t0=$(date +%s)
rm -rf /tmp/llama-src && mkdir -p /tmp/llama-src && tar -xJf llama-src.tar.xz -C /tmp/llama-src
cmake -S /tmp/llama-src/llama.cpp -B /tmp/lb -G Ninja -DGGML_CUDA=ON -DGGML_NATIVE=OFF \
    -DCMAKE_CUDA_ARCHITECTURES=$arch -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /tmp/lb-cmake.log 2>&1
nice -n 19 cmake --build /tmp/lb --target llama-bench -j"$(nproc)" >> /tmp/lb-cmake.log 2>&1
echo "llama-bench ($(cat /tmp/llama-src/llama.cpp/SOURCE)) built in $(( $(date +%s) - t0 )) s"
