#!/usr/bin/env bash
# Run ON THE GPU MACHINE: compiles our hook and kernels (kernels/cuda/
# ggml-hook.cu, with mmv.cuh and attn.cuh) inside ggml-cuda for each of the
# default architectures of a `cargo build --features cuda` with no GPU visible
# (80, 86, 89, 90a, 100, 120), through the same CMake project, and lists the
# device code the object holds. Only that object is compiled, not all of
# ggml-cuda (which would take an hour for six architectures). Exit status 1
# when it does not compile or an architecture is missing. Results in
# $OUT/arch-check.txt. kernel-test.sh compiles the kernel tests for the same
# architectures.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
src=${GGML_SRC:-$PWD/gpu-carry/ggml}
b=/tmp/ggml-archs
t0=$(date +%s)
log=$OUT/arch-check.txt
cmake -S kernels/cuda -B $b -G Ninja -DGGML_SOURCE_DIR="$src" -DORTHRUS_GGML_CUDA_MODULE=ON \
    -DORTHRUS_CUDA_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release > /tmp/arch-cmake.log 2>&1 || { tail -30 /tmp/arch-cmake.log | tee "$log"; exit 1; }
grep -E "^-- orthrus:" /tmp/arch-cmake.log | tee "$log"
obj=$(ninja -C $b -t targets all | grep -o '^[^:]*ggml-hook\.cu\.o' | head -1)
[ -n "$obj" ] || { echo "no ggml-hook.cu object among the build's targets" | tee -a "$log"; exit 1; }
nice -n 10 ninja -C $b "$obj" > /tmp/arch-ninja.log 2>&1 || { tail -40 /tmp/arch-ninja.log | tee -a "$log"; exit 1; }
cuobjdump=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
elves=$("$cuobjdump" --list-elf "$b/$obj" | grep -o 'sm_[0-9]*a\?' | sort -u | tr '\n' ' ')
echo "ggml-hook.cu.o compiled in $(( $(date +%s) - t0 )) s; device code for: $elves" | tee -a "$log"
want=$(sed -n 's/.*set(orthrus_archs_default "\([^"]*\)").*/\1/p' kernels/cuda/CMakeLists.txt | head -1)
failed=0
for a in ${want//;/ }; do
    # ggml-cuda's CMake makes 12x into 12xa.
    case $a in 12?) a=${a}a ;; esac
    if [[ " $elves " != *" sm_$a "* ]]; then echo "missing: sm_$a" | tee -a "$log"; failed=1; fi
done
exit $failed
