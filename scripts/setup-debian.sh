#!/usr/bin/env bash
# Installs what building and testing needs on a fresh Debian/Ubuntu machine:
# a C/C++ toolchain, cmake and libclang (ggml and its bindings), Rust, and the
# Python packages the fixture scripts and cross-checks use. Safe to re-run.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v c++ >/dev/null || need_apt+=(build-essential)
ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-*.so.* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip python3-venv)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
# scripts/test.sh checks formatting and lints; rustup's minimal profile has neither.
if command -v rustup >/dev/null; then
    for c in clippy rustfmt; do
        rustup component list --installed | grep -q "^$c" || rustup component add "$c"
    done
fi

req="$(dirname "$0")/../tests/python/requirements.txt"
if ! python3 -c 'import numpy, gguf, pytest, xdist, tokenizers, transformers, openai, sentencepiece' 2>/dev/null; then
    # Debian's own python3 refuses global pip installs (PEP 668); a user install with the override is the least surprising.
    python3 -m pip install -q -r "$req" 2>/dev/null \
        || python3 -m pip install -q --user --break-system-packages -r "$req"
fi
echo "setup: ok"
