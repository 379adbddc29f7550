#!/usr/bin/env bash
# Run HERE: downloads the llama-cpp-python sdist from PyPI (it carries the
# whole llama.cpp tree under vendor/llama.cpp; the tree in llama-cpp-sys-2 has
# no tool sources) and packs what llama-bench needs to build with CUDA into
# llama-src.tar.xz (git-ignored, about 2.5 MB; the working tree that travels
# to the GPU machine is limited to 64 MiB). build-llama.sh builds it there.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${LLAMA_CPP_PYTHON:-0.3.36}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp"
tar -xzf "$tmp"/llama_cpp_python-"$version".tar.gz -C "$tmp"
s=$tmp/llama_cpp_python-$version/vendor/llama.cpp d=$tmp/out/llama.cpp
mkdir -p "$d/vendor" "$d/tools" "$d/ggml/src"
cp -a "$s"/CMakeLists.txt "$s"/cmake "$s"/common "$s"/src "$s"/include "$s"/licenses "$s"/LICENSE "$d/"
cp -a "$s"/vendor/CMakeLists.txt "$s"/vendor/{cpp-httplib,nlohmann,sheredom,stb,hash,miniaudio} "$d/vendor/"
cp -a "$s"/tools/llama-bench "$d/tools/"
# Only llama-bench of the tools.
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > "$d/tools/CMakeLists.txt"
cp -a "$s"/ggml/CMakeLists.txt "$s"/ggml/cmake "$s"/ggml/include "$d/ggml/"
find "$s/ggml/src" -maxdepth 1 -type f -exec cp {} "$d/ggml/src/" \;
cp -a "$s"/ggml/src/ggml-cpu "$s"/ggml/src/ggml-cuda "$d/ggml/src/"
echo "llama-cpp-python $version" > "$d/SOURCE"
tar -cf - -C "$tmp/out" llama.cpp | xz -9 -T0 > llama-src.tar.xz.tmp && mv llama-src.tar.xz.tmp llama-src.tar.xz
du -h llama-src.tar.xz
