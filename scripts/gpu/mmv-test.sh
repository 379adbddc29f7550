#!/usr/bin/env bash
# Run ON THE GPU MACHINE: compiles and runs kernels/cuda/mmv-test.cu, the
# test and timings of our tensor-core matmul without ggml (~30 s), into
# $OUT/mmv-test.txt. Exit status 1 when it does not compile or a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
t0=$(date +%s)
"$nvcc" -O3 -std=c++17 -arch=sm_$arch -o /tmp/mmv-test kernels/cuda/mmv-test.cu 2>&1 | tee "$OUT/mmv-test.txt"
echo "compiled in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/mmv-test.txt"
/tmp/mmv-test 2>&1 | tee -a "$OUT/mmv-test.txt"
