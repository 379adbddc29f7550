#!/usr/bin/env bash
# Fuzzes the GGUF reader (kernels/fuzz, target gguf_reader) for $1 seconds
# (default 30). Exits non-zero when libFuzzer finds a crash; the input that
# caused it is left in kernels/fuzz/artifacts/gguf_reader/.
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/kernels/fuzz"
corpus="$fuzz_dir/corpus/gguf_reader"

# cargo-fuzz needs unstable compiler flags (sanitizers, coverage passes);
# this lets a stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (a few minutes, once)" >&2
    cargo install cargo-fuzz --locked
fi

# The fuzz build differs from the main one in target triple dir, profile and
# RUSTFLAGS, so sharing the main target/ would reuse nothing and only contend
# for its build lock: keep it in kernels/fuzz/target (gitignored) unless
# FUZZ_TARGET_DIR says otherwise. This also overrides a CARGO_TARGET_DIR
# exported for the main workspace.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"

mkdir -p "$corpus"
for seed in "$fuzz_dir"/seeds/*.gguf; do
    [ -e "$corpus/$(basename "$seed")" ] || cp "$seed" "$corpus/"
done

cd "$fuzz_dir"
# orthrus-kernels without its ggml feature (kernels/fuzz/Cargo.toml), so no
# llama.cpp: about a minute the first time.
cargo fuzz build gguf_reader
# -rss_limit_mb / -malloc_limit_mb turn an allocation driven by a hostile
# count into a reported crash instead of a slow swap.
exec cargo fuzz run gguf_reader "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1
