# Sourced, from the repository root, by the scripts that run ON THE GPU
# MACHINE (bench.sh, train.sh, variants.sh): unpacks gpu-carry.tar.xz,
# sets OUT, bin and LD_LIBRARY_PATH, records the GPU, and starts building
# libggml-cuda.so on the CPU in the background; wait_for_cuda waits for it.
# A later call on the same (still warm) machine finds both done and skips them.
if [ -f gpu-carry.tar.xz ] && [ ! -x gpu-carry/bin/orthrus ]; then
    rm -rf gpu-carry
    tar -xJf gpu-carry.tar.xz
fi
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
if [ -f "$bin/libggml-cuda.so" ]; then
    echo "libggml-cuda.so already built" > "$OUT/build.txt"
    true &
else
    bash scripts/gpu/build-cuda.sh > "$OUT/build.txt" 2>&1 &
fi
cuda_build=$!

wait_for_cuda() {
    wait $cuda_build || { tail -30 /tmp/cmake.log; exit 1; }
    cat "$OUT/build.txt"
}
