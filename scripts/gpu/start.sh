# Sourced, from the repository root, by the scripts that run ON THE GPU
# MACHINE (bench.sh, train.sh, variants.sh): unpacks gpu-carry.tar.xz,
# sets OUT, bin and LD_LIBRARY_PATH, records the GPU, and starts building
# libggml-cuda.so on the CPU in the background; wait_for_cuda waits for it.
# On a machine still warm from an earlier call, an archive unchanged since is
# not unpacked again, and the build (its tree in /tmp/ggml-build) recompiles
# only what changed (kernels/cuda/CMakeLists.txt rewrites a patched ggml file
# only when its content changes): a kernel edit costs a minute or two, not four.
if [ -f gpu-carry.tar.xz ]; then
    sum=$(md5sum gpu-carry.tar.xz | cut -d' ' -f1)
    if [ ! -x gpu-carry/bin/orthrus ] || [ "$(cat /tmp/gpu-carry.md5 2>/dev/null)" != "$sum" ]; then
        rm -rf gpu-carry
        tar -xJf gpu-carry.tar.xz
        echo "$sum" > /tmp/gpu-carry.md5
    fi
fi
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
bash scripts/gpu/build-cuda.sh > "$OUT/build.txt" 2>&1 &
cuda_build=$!

wait_for_cuda() {
    wait $cuda_build || { tail -30 /tmp/cmake.log; exit 1; }
    cat "$OUT/build.txt"
}
