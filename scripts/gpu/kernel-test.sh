#!/usr/bin/env bash
# Run ON THE GPU MACHINE: compiles and runs the tests of our CUDA kernels
# without ggml (kernels/cuda/NAME-test.cu for each NAME given, default: mmv
# attn argmax topk): checks and timings into $OUT/NAME-test.txt, ptxas's register counts
# into $OUT/NAME-ptxas.txt. Compiled for every architecture a `cargo build
# --features cuda` defaults to (kernels/cuda/CMakeLists.txt's
# orthrus_archs_default: the check that they all compile), run on this
# GPU; ARCHS=native compiles for this GPU only (~30 s a test instead of
# minutes), ARCHS="86;90a" for those. The NAME-test.cu builds run side by
# side. Exit status 1 when one does not compile or a check fails.
# PROFILE=1: then Nsight Compute's view of a few of the timed calls (for mmv,
# the 8B's Q4_K and Q6_K shapes at 1 and 16 columns as ggml-hook.cu launches
# them), into $OUT/NAME-ncu.txt, when ncu is there; PROFILE_KERNELS, a regex
# of the kernels' names (default _kernel; e.g. mmv_kernel).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
archs=${ARCHS:-$(sed -n 's/.*set(orthrus_archs_default "\([^"]*\)").*/\1/p' kernels/cuda/CMakeLists.txt | head -1)}
[ "$archs" = native ] && archs=$arch
gencode=()
for a in ${archs//;/ }; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
[[ ";$archs;" == *";$arch;"* ]] || echo "warning: this GPU (sm_$arch) is not among $archs: the tests will not run" >&2
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(mmv attn argmax topk)
t0=$(date +%s)
for n in "${names[@]}"; do
    rm -f "/tmp/$n-test"
    "$nvcc" -O3 -std=c++17 --threads 0 "${gencode[@]}" -Xptxas -v -o "/tmp/$n-test" "kernels/cuda/$n-test.cu" > "/tmp/$n-nvcc.txt" 2>&1 &
done
wait || true
failed=0
for n in "${names[@]}"; do
    if [ ! -x "/tmp/$n-test" ]; then
        cp "/tmp/$n-nvcc.txt" "$OUT/$n-test.txt"; cat "/tmp/$n-nvcc.txt"; failed=1; continue
    fi
    grep -E "entry function|registers|spill" "/tmp/$n-nvcc.txt" > "$OUT/$n-ptxas.txt" || true
    echo "compiled for $archs in $(( $(date +%s) - t0 )) s" > "$OUT/$n-test.txt"
    "/tmp/$n-test" 2>&1 | tee -a "$OUT/$n-test.txt" || failed=1
    if [ -n "${PROFILE:-}" ]; then
        ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
        if [ -n "$ncu" ]; then
            "$ncu" --kernel-name regex:"${PROFILE_KERNELS:-_kernel}" --section SpeedOfLight --section Occupancy \
                --section LaunchStats --section WarpStateStats --section SchedulerStats --section InstructionStats \
                --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section SourceCounters "/tmp/$n-test" profile \
                > "$OUT/$n-ncu.txt" 2>&1 || true
        else
            echo "no ncu on this machine" > "$OUT/$n-ncu.txt"
        fi
    fi
done
exit $failed
