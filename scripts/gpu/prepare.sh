#!/usr/bin/env bash
# Run HERE (no GPU needed): builds the release binaries with ggml's
# dynamic backends and stages what the GPU machine needs under gpu-carry/
# (git-ignored): the binaries and ggml's shared libraries in gpu-carry/bin,
# and ggml's source (unpatched, the CUDA backend and the CPU one's headers) in gpu-carry/ggml, from
# which build-cuda.sh builds libggml-cuda.so there through
# kernels/cuda/CMakeLists.txt, the CMake step of `cargo build --features cuda`;
# packed as gpu-carry.tar.xz (the scripts there unpack it). The working tree that travels is limited to 64 MiB: the tracked files
# take 59.8 MB (2026-12-01), this archive 4.8 MB at xz -9e, llama-src.tar.xz
# (fetch-llama.sh) 2.3 MB. Then call the device tool with
#   carry: ["gpu-carry.tar.xz", "llama-src.tar.xz"], command: "bash scripts/gpu/variants.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
# Our CUDA code type-checked here first (scripts/cuda-check.py): an error found
# now costs seconds, on the GPU machine a build. Status 2 (it could not set
# itself up, e.g. offline) only warns; CUDA_CHECK=0 skips it.
rc=0; [ "${CUDA_CHECK:-1}" = 0 ] || python3 scripts/cuda-check.py || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 2 ] || { echo "prepare: scripts/cuda-check.py found errors" >&2; exit 1; }
[ "$rc" = 0 ] || echo "prepare: scripts/cuda-check.py could not run; going on unchecked" >&2
example="-p orthrus-tests --example llama_bench --example acceptance_oracle"; [ -z "${SLIM:-}" ] || example=""
cargo build --release -p orthrus-engine -p orthrus-convert $example --bin orthrus --bin orthrus-convert --features orthrus-engine/dynamic-backends --target-dir target-gpu
# What travels: the binaries, ggml's libraries and CPU variants for the x86-64
# servers GPUs sit in (the working tree that travels is limited to 64 MiB, so
# not all twenty). SLIM=1 leaves room for llama-src.tar.xz beside this
# archive: only x64 and haswell (ggml falls back to those; the GPU runs hardly
# use the CPU backend), and without the llama_bench example and its
# libllama.so (variants.sh's LLAMA runs then have llama.cpp's own llama-bench
# only).
bins="orthrus orthrus-convert examples/llama_bench examples/acceptance_oracle" libs="libggml-base.so* libggml.so* libllama.so*"
variants="x64 haswell icelake sapphirerapids zen4"
[ -z "${SLIM:-}" ] || { bins="orthrus orthrus-convert"; libs="libggml-base.so* libggml.so*"; variants="x64 haswell"; }
rm -rf gpu-carry && mkdir -p gpu-carry/bin
for b in $bins; do
    cp "target-gpu/release/$b" gpu-carry/bin/
    strip "gpu-carry/bin/$(basename "$b")"
done
out=$(dirname "$(ls -t target-gpu/release/build/llama-cpp-sys-2-*/out/build/bin/libggml-base.so 2>/dev/null | head -1)")
[ -n "$out" ] || { echo "no libggml-base.so under target-gpu; is dynamic-backends on?" >&2; exit 1; }
for l in $libs; do
    cp -a "$out"/$l gpu-carry/bin/
done
for v in $variants; do
    cp "$out/libggml-cpu-$v.so" gpu-carry/bin/
done
strip gpu-carry/bin/*.so* 2>/dev/null || true
src=$(ls -d ~/.cargo/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml | head -1)
mkdir -p gpu-carry/ggml/src
cp -a "$src"/CMakeLists.txt "$src"/cmake "$src"/include gpu-carry/ggml/
find "$src/src" -maxdepth 1 -type f -exec cp {} gpu-carry/ggml/src/ \;
cp -a "$src"/src/ggml-cuda gpu-carry/ggml/src/
(cd "$src/src" && find ggml-cpu -name '*.h' -exec cp --parents {} "$OLDPWD/gpu-carry/ggml/src/" \;)
du -sh gpu-carry gpu-carry/*
tar -cf - gpu-carry | xz -9e -T0 > gpu-carry.tar.xz.tmp && mv gpu-carry.tar.xz.tmp gpu-carry.tar.xz
du -sh gpu-carry.tar.xz
