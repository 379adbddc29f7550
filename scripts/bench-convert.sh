#!/usr/bin/env bash
# Converter benchmark: our HF -> Q4_K_M conversion against llama.cpp's own
# quantizer going F16 GGUF -> Q4_K_M, on the same machine, same model.
# Prints wall time and peak memory of each, and their ratio.
#
#   scripts/bench-convert.sh [qwen3-1.7b|qwen3-8b] [WORKDIR]
#
# WORKDIR (default /tmp/orthrus-bench) needs ~3x the model's bf16 size free.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-qwen3-1.7b}
work=${2:-/tmp/orthrus-bench}
mkdir -p "$work"
cargo build --release -q -p orthrus-convert
cargo build --release -q -p orthrus-tests --example llama_quantize
convert=target/release/orthrus-convert
quantize=target/release/examples/llama_quantize

ck="$work/$preset"
if [ ! -f "$ck/config.json" ]; then
    python3 models/make_fixtures.py preset "$preset" "$ck"
fi

measure() {  # measure LABEL CMD...: prints "LABEL seconds peak_MiB"
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/$label.log" \
        || { cat "$work/$label.log"; exit 1; }
    read -r secs kib < "$work/time.txt"
    echo "$label $secs $((kib / 1024))"
}

largest=$(python3 - "$ck" <<'PY'
import json, sys, pathlib, struct
d = pathlib.Path(sys.argv[1]); best = 0
for f in d.glob("*.safetensors"):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        for k, v in json.loads(fh.read(n)).items():
            if k != "__metadata__":
                best = max(best, v["data_offsets"][1] - v["data_offsets"][0])
print(best // (1 << 20))
PY
)

# The F16 files llama-quantize starts from (its usual input): the whole model
# (both views; llama-quantize quantizes the _diff tensors like any other, so
# it does the same work as we do) and the --split base (the AR view alone).
"$convert" "$ck" -o "$work/whole-f16.gguf" --type f16 >/dev/null 2>&1
"$convert" "$ck" -o "$work/base-f16.gguf" --type f16 --split >/dev/null 2>&1
sync

read -r _ ours_s ours_mib < <(measure ours "$convert" "$ck" -o "$work/ours-q4_k_m.gguf" --type q4_k_m)
read -r _ whole_s whole_mib < <(measure llama-whole "$quantize" "$work/whole-f16.gguf" "$work/llama-whole-q4_k_m.gguf" q4_k_m)
read -r _ ref_s ref_mib < <(measure llama "$quantize" "$work/base-f16.gguf" "$work/llama-q4_k_m.gguf" q4_k_m)

echo "model: $preset ($(du -sh "$ck" | cut -f1) checkpoint), largest tensor ${largest} MiB, $(nproc) cores"
echo "orthrus-convert HF -> Q4_K_M (both views): ${ours_s} s, peak ${ours_mib} MiB"
echo "llama.cpp quantize F16 -> Q4_K_M (both views): ${whole_s} s, peak ${whole_mib} MiB"
echo "llama.cpp quantize F16 -> Q4_K_M (AR only): ${ref_s} s, peak ${ref_mib} MiB"
python3 - "$ours_s" "$whole_s" "$ref_s" "$ours_mib" "$largest" <<'PY'
import sys
ours, whole, ref, mib, largest = map(float, sys.argv[1:])
print(f"time ratio ours/llama.cpp, same model (both views): {ours / whole:.2f}")
print(f"time ratio ours (both views)/llama.cpp (AR only): {ours / ref:.2f}")
print(f"memory: {mib:.0f} MiB vs budget 2 x {largest:.0f} + 1024 = {2 * largest + 1024:.0f} MiB")
PY
