#!/usr/bin/env bash
# Run ON THE GPU MACHINE, after variants.sh (its models and libggml-cuda.so in
# place): a kernel-by-kernel timeline of greedy `ar` and `orthrus` decoding,
# and of llama.cpp's llama-bench when build-llama.sh built it, through
# ktrace.cpp (CUPTI; the machine has no Nsight Systems, and Nsight Compute
# replays each kernel alone, far too slowly for whole passes). Per kind of
# pass (trace-report.py): its span, the kernels' busy time, the GPU's idle
# time inside it and before it, and its kernels by name. Into
# $OUT/trace-PRESET-TYPE.txt.
#   PRESET, TYPE   the model (default qwen3-1.7b, q4_k_m)
#   VARIANTS       environments as in variants.sh (default "-")
#   N              tokens generated (default 48), after a PROMPT_LEN-token prompt (default 512)
#   DRAFT_MAX      orthrus mode's --draft-max (default: the model's block - 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
bin=$PWD/gpu-carry/bin
preset=${PRESET:-qwen3-1.7b}; type=${TYPE:-q4_k_m}
m=/tmp/orthrus-gpu/$preset-$type
rep=$OUT/trace-$preset-$type.txt
cuda=/usr/local/cuda
inc=$(dirname "$(find -L "$cuda"/ -name cupti_activity.h 2>/dev/null | head -1)")
lib=$(dirname "$(find -L "$cuda"/ -name 'libcupti.so*' 2>/dev/null | head -1)")
[ -n "$inc" ] && [ -n "$lib" ] || { echo "no CUPTI under $cuda" | tee "$rep"; exit 0; }
g++ -O2 -std=c++17 -shared -fPIC -I "$inc" -I "$cuda/include" scripts/gpu/ktrace.cpp -L "$lib" -lcupti \
    -Wl,-rpath,"$lib" -o /tmp/ktrace.so
ids=$(seq -s, 1000 $(( 999 + ${PROMPT_LEN:-512} )))
n=${N:-48}
: > "$rep"
for v in ${VARIANTS:--}; do
    envs=$([ "$v" = - ] || echo "$v" | tr , ' ')
    for mode in ar orthrus; do
        t=/tmp/trace-$mode.csv
        env $envs KTRACE_OUT=$t LD_PRELOAD=/tmp/ktrace.so LD_LIBRARY_PATH="$bin:$lib" "$bin/orthrus" run -m "$m.gguf" \
            --head "$m.head.gguf" --prompt-ids "$ids" -n "$n" --mode "$mode" ${DRAFT_MAX:+--draft-max "$DRAFT_MAX"} --ignore-eos --json > /tmp/trace-$mode.json \
            2> /tmp/trace-$mode.err || { tail -5 /tmp/trace-$mode.err | tee -a "$rep"; continue; }
        python3 scripts/gpu/trace-report.py "$t" "ours $mode $v, $preset $type, $n tokens" >> "$rep"
    done
done
lb=/tmp/lb/bin/llama-bench
if [ -x "$lb" ]; then
    KTRACE_OUT=/tmp/trace-lb.csv LD_PRELOAD=/tmp/ktrace.so LD_LIBRARY_PATH="/tmp/lb/bin:$lib" "$lb" -m "$m.gguf" \
        -p 0 -n "$n" -d "${PROMPT_LEN:-512}" -ngl 99 -fa 1 -r 1 > /tmp/trace-lb.out 2>&1 \
        && python3 scripts/gpu/trace-report.py /tmp/trace-lb.csv "llama-bench tg$n at depth ${PROMPT_LEN:-512}" >> "$rep" \
        || tail -5 /tmp/trace-lb.out | tee -a "$rep"
fi
cat "$rep"
