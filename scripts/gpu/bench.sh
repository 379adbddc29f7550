#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry):
# builds libggml-cuda.so from the carried ggml source, writes a random-weight
# Orthrus checkpoint of Qwen3-1.7B shapes, converts it to Q4_K_M and Q8_0,
# and runs `orthrus bench` (ar vs orthrus, prompt and generation speed, step
# time) plus the greedy orthrus == ar check over 20 prompts x 128 tokens.
# Results go to $OUT (or ./gpu-out).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
work=/tmp/orthrus-gpu; mkdir -p "$work"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
( t0=$(date +%s)
  cmake -S gpu-carry/ggml -B /tmp/ggml-build -G Ninja -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON \
      -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=$arch -DCMAKE_BUILD_TYPE=Release >/tmp/cmake.log 2>&1
  cmake --build /tmp/ggml-build --target ggml-cuda -j"$(nproc)" >>/tmp/cmake.log 2>&1
  cp /tmp/ggml-build/bin/libggml-cuda.so "$bin/" 2>/dev/null || cp "$(find /tmp/ggml-build -name 'libggml-cuda.so' | head -1)" "$bin/"
  echo "ggml-cuda built in $(( $(date +%s) - t0 )) s" ) > "$OUT/build.txt" 2>&1 &
build=$!

preset=${PRESET:-qwen3-1.7b}
python3 models/make_fixtures.py preset "$preset" "$work/$preset" > "$OUT/fixture.txt" 2>&1
for t in q4_k_m q8_0; do
    t0=$(date +%s%N)
    "$bin/orthrus-convert" "$work/$preset" -o "$work/$preset-$t.gguf" --type "$t" > /dev/null
    echo "convert $t: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >> "$OUT/convert.txt"
done
wait $build || { tail -30 /tmp/cmake.log; exit 1; }
cat "$OUT/build.txt"
"$bin/orthrus" bench -m "$work/$preset-q4_k_m.gguf" --random-prompt-len 512 -N 128 --random-prompts 20 --check --json > "$OUT/bench-q4_k_m.json" 2> "$OUT/bench-q4_k_m.err" || true
"$bin/orthrus" bench -m "$work/$preset-q8_0.gguf" --random-prompt-len 512 -N 128 --random-prompts 5 --json > "$OUT/bench-q8_0.json" 2> "$OUT/bench-q8_0.err" || true
cat "$OUT"/convert.txt "$OUT"/bench-*.json; tail -5 "$OUT"/bench-*.err
