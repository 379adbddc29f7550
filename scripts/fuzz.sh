#!/usr/bin/env bash
# Fuzzes, for $1 seconds in all (default 30) split evenly between them, the
# GGUF reader (gguf_reader), the chat template renderer (chat_template) and
# the converter's safetensors/config.json readers (checkpoint_reader), all in
# kernels/fuzz. Exits non-zero when libFuzzer finds a crash; the input that
# caused it is left in kernels/fuzz/artifacts/<target>/.
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

targets=(gguf_reader chat_template checkpoint_reader)
each=$(( seconds / ${#targets[@]} ))
(( each >= 1 )) || each=1

mkdir -p "$corpus"
for seed in "$fuzz_dir"/seeds/*.gguf; do
    [ -e "$corpus/$(basename "$seed")" ] || cp "$seed" "$corpus/"
done
for t in chat_template checkpoint_reader; do
    mkdir -p "$fuzz_dir/corpus/$t"
    for seed in "$fuzz_dir/seeds/$t"/*; do
        [ -e "$fuzz_dir/corpus/$t/$(basename "$seed")" ] || cp "$seed" "$fuzz_dir/corpus/$t/"
    done
done

cd "$fuzz_dir"
# Every target in one build (orthrus-kernels without its ggml feature and
# orthrus-convert without its pipeline, kernels/fuzz/Cargo.toml: no
# llama.cpp), so the dependencies are compiled once.
cargo fuzz build
# -rss_limit_mb / -malloc_limit_mb turn an allocation driven by a hostile
# count into a reported crash instead of a slow swap; -timeout a hang
# (a template past its fuel) into one.
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for $each s" >&2
    cargo fuzz run "$t" "$fuzz_dir/corpus/$t" -- \
        -max_total_time="$each" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
        -print_final_stats=1
done
