#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry.tar.xz):
# builds libggml-cuda.so from the carried ggml source, writes a random-weight
# Orthrus checkpoint of Qwen3-1.7B shapes, converts it to Q4_K_M and Q8_0,
# and runs `orthrus bench` (ar vs orthrus, prompt and generation speed, step
# time) plus the greedy orthrus == ar check over 20 prompts x 128 tokens.
# Results go to $OUT (or ./gpu-out).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-gpu; mkdir -p "$work"

preset=${PRESET:-qwen3-1.7b}
# TYPES: the weight types to convert and bench (default both goals' types).
types=${TYPES:-q4_k_m q8_0}
python3 models/make_fixtures.py preset "$preset" "$work/$preset" > "$work/fixture.txt" 2>&1
# QUICK=1: Q4_K_M only, no tiny checks, no llama.cpp, 5 prompts (a short diagnostic run).
[ -n "${QUICK:-}" ] && types=q4_k_m
for t in $types; do
    t0=$(date +%s%N)
    "$bin/orthrus-convert" "$work/$preset" -o "$work/$preset-$t.gguf" --type "$t" --split > /dev/null
    echo "convert $t: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >> "$OUT/convert.txt"
done
wait_for_cuda

if [ -z "${QUICK:-}" ]; then
# Quick checks on the tiny fixtures first: every cache type and placement.
for fx in tiny-tied-bf16 tiny-untied-f16-sharded; do
    "$bin/orthrus-convert" models/fixtures/$fx -o "$work/$fx-q8_0.gguf" --type q8_0 > /dev/null
done
status=ok
for fx in tiny-tied-bf16 tiny-untied-f16-sharded; do
    for cfg in "--cache-type f32" "--cache-type f16" "--cache-type f16 --ngl 0" "--cache-type f16 --ngl 2"; do
        if "$bin/orthrus" run -m "$work/$fx-q8_0.gguf" --prompt-ids 1,2,3,4,5 -N 24 --ignore-eos --json $cfg > "$work/out.json" 2> "$work/err.txt"; then
            echo "$fx $cfg: ok $(head -c 200 "$work/out.json")" >> "$OUT/tiny.txt"
        else
            echo "$fx $cfg: FAILED $(grep -m3 -i 'error' "$work/err.txt")" >> "$OUT/tiny.txt"
            status=failed
            [ -f "$work/sanitizer.txt" ] || compute-sanitizer --tool memcheck --print-limit 5 "$bin/orthrus" run -m "$work/$fx-q8_0.gguf" --prompt-ids 1,2,3,4,5 -N 4 --ignore-eos $cfg > "$work/sanitizer.txt" 2>&1 || true
        fi
    done
done
cat "$OUT/tiny.txt"
fi
# The --split base is a plain Qwen3 file: llama.cpp (its llama_* code, on
# the same ggml build) decodes it; we run it with the head.
for t in $types; do
    m="$work/$preset-$t.gguf"; h="$work/$preset-$t.head.gguf"
    [ -n "${QUICK:-}" ] || "$bin/llama_bench" "$m" 3 > "$OUT/llama-$t.json" 2> "$work/llama-$t.err" || true
    n=5; extra=""; [ $t = q4_k_m ] && { n=20; extra="--check"; }
    [ -n "${QUICK:-}" ] && n=5
    "$bin/orthrus" bench -m "$m" --head "$h" --random-prompt-len 512 -N 128 --random-prompts $n $extra --json > "$OUT/bench-$t.json" 2> "$work/bench-$t.err" || true
done
# The bundled trained model: real drafts, so real acceptance (held-out prompts).
"$bin/orthrus" bench -m models/tiny-orthrus/tiny-orthrus-q8_0.gguf --prompts-file models/tiny-orthrus/heldout-prompts.json \
    -N 256 --check --json > "$OUT/bench-tiny-orthrus.json" 2> "$work/bench-tiny.err" || true
cat "$OUT"/convert.txt "$OUT"/llama-*.json "$OUT"/bench-*.json 2>/dev/null || true; for f in "$work"/*.err; do tail -n 5 "$f"; done; head -c 3000 "$work/sanitizer.txt" 2>/dev/null || true
