#!/usr/bin/env bash
# Run ON THE GPU MACHINE: compiles and runs kernels/cuda/mmv-test.cu, the
# test and timings of our tensor-core matmul without ggml (~30 s), into
# $OUT/mmv-test.txt (ptxas's register counts in mmv-ptxas.txt). Exit status 1 when it
# does not compile or a check fails. PROFILE=1: then Nsight Compute's view of
# a few of the timed products, into $OUT/mmv-ncu.txt, when ncu is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
t0=$(date +%s)
"$nvcc" -O3 -std=c++17 -arch=sm_$arch -Xptxas -v -o /tmp/mmv-test kernels/cuda/mmv-test.cu > /tmp/mmv-nvcc.txt 2>&1 ||
    { cat /tmp/mmv-nvcc.txt | tee "$OUT/mmv-test.txt"; exit 1; }
grep -E "entry function|registers|spill" /tmp/mmv-nvcc.txt > "$OUT/mmv-ptxas.txt" || true; : > "$OUT/mmv-test.txt"
echo "compiled in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/mmv-test.txt"
/tmp/mmv-test 2>&1 | tee -a "$OUT/mmv-test.txt"
if [ -n "${PROFILE:-}" ]; then
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
    if [ -n "$ncu" ]; then
        "$ncu" --kernel-name regex:mmv_kernel --section SpeedOfLight --section Occupancy --section LaunchStats \
            --section WarpStateStats --section MemoryWorkloadAnalysis /tmp/mmv-test profile > "$OUT/mmv-ncu.txt" 2>&1 || true
    else
        echo "no ncu on this machine" > "$OUT/mmv-ncu.txt"
    fi
fi
