#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying
# gpu-carry.tar.xz):
# our decoding under several environments against llama.cpp on the same
# files, in alternating rounds (a shared GPU's speed drifts between minutes):
# llama.cpp's llama_* code on our ggml build (tests/examples/llama_bench.rs),
# and llama.cpp's own llama-bench when build-llama.sh has built it here.
#
#   PRESET    random-weight model shapes (default qwen3-1.7b; see make_fixtures.py)
#   TYPES     weight types (default: q4_k_m q8_0)
#   VARIANTS  space-separated settings for `orthrus`, each a comma-separated list
#             of NAME=VALUE environment variables and --flags (e.g. --exact),
#             "-" for none (default: "- ORTHRUS_CUDA_KERNELS=off")
#   ROUNDS    rounds (default 2)
#   PROMPT_LEN  random prompt length (default 512; e.g. 1000 to take the
#             generation across the exact path's 1024-slot window)
#   CHECK     prompts x 128 tokens of the greedy orthrus == ar check per
#             variant, on the first type (default 20; 0: none)
#   TINY=1    also the bundled trained model under each variant
#   LLAMA=0   no llama.cpp runs (e.g. with CUDA_FA=OFF, whose build has no
#             flash-attention kernels: enough for --exact variants only)
#   KERNEL_TEST=1  first the tests of our CUDA kernels alone (kernel-test.sh) and
#             arch-check.sh, for every default architecture; stop if one fails
#   DEADLINE  a time (seconds since the epoch) after which no further run starts,
#             so that what was measured comes back within the device call's limit
#   KEEP=1    keep the results of earlier calls on a machine still warm (by
#             default they are cleared, so that the table shows this call's only)
#
# Results go to $OUT/variants-PRESET.tgz, a table last.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
preset=${PRESET:-qwen3-1.7b}
work=/tmp/orthrus-gpu; res=/tmp/variants-$preset
[ -n "${KEEP:-}" ] || rm -rf "$res"
mkdir -p "$work" "$res"
types=(${TYPES:-q4_k_m q8_0})
variants=(${VARIANTS:-- ORTHRUS_CUDA_KERNELS=off})
# The archive is written on any exit, whatever was measured by then.
pack() { tar -czf "$OUT/variants-$preset.tgz" -C "$res" . 2>/dev/null || true; }
trap pack EXIT
# KERNEL_TEST=1: first our kernels' own tests (kernels/cuda/*-test.cu, compiled for every
# default architecture) and, beside them, arch-check.sh (our hook inside ggml-cuda for
# every default architecture); stop if one fails.
if [ -n "${KERNEL_TEST:-}" ]; then
    bash scripts/gpu/arch-check.sh > /dev/null 2>&1 & arch_check=$!
    bash scripts/gpu/kernel-test.sh || { kill $cuda_build $arch_check 2>/dev/null; exit 1; }
    wait $arch_check || { cat "$OUT/arch-check.txt"; kill $cuda_build 2>/dev/null; exit 1; }
fi
bash scripts/gpu/models.sh "$preset" "${types[@]}"
wait_for_cuda
# llama.cpp's own llama-bench (build-llama.sh), when it was built on this machine;
# its own ggml libraries, not ours (LD_LIBRARY_PATH), or it fails to start.
lb=/tmp/lb/bin/llama-bench; [ -x "$lb" ] || lb=

late() { [ "${DEADLINE:-0}" -gt 0 ] && [ "$(date +%s)" -ge "$DEADLINE" ] && echo "past DEADLINE: skipped $*" >&2; }
envs() { [ "$1" = - ] || echo "$1" | tr , '\n' | grep -v '^--' | tr '\n' ' '; }
flags() { [ "$1" = - ] || echo "$1" | tr , '\n' | grep '^--' | tr '\n' ' '; }
# File names travel back only in letters, digits, ".", "_" and "-".
tag() { echo "$1" | tr '=,' '-_' | sed 's/^--//; s/_--/_/g'; }
for r in $(seq "${ROUNDS:-2}"); do
    for t in "${types[@]}"; do
        m="$work/$preset-$t.gguf"
        late "round $r $t" && continue
        [ "${LLAMA:-1}" = 0 ] || "$bin/llama_bench" "$m" 2 > "$res/llama-$t-r$r.json" 2>> "$work/err.txt" || true
        [ -z "$lb" ] || [ "${LLAMA:-1}" = 0 ] || LD_LIBRARY_PATH=/tmp/lb/bin "$lb" -m "$m" -p 512 -n 128 -d 0,512 -ngl 99 -fa 1 -r 3 -o json > "$res/llamabench-$t-r$r.json" 2>> "$work/err.txt" || true
        for v in "${variants[@]}"; do
            late "round $r $t $v" && continue
            env $(envs "$v") "$bin/orthrus" bench $(flags "$v") -m "$m" --head "$work/$preset-$t.head.gguf" --random-prompt-len "${PROMPT_LEN:-512}" \
                -n 128 --random-prompts 3 --json > "$res/ours-$t-$(tag "$v")-r$r.json" 2>> "$work/err.txt" || true
        done
    done
done
if [ "${CHECK:-20}" -gt 0 ]; then
    t=${types[0]}
    for v in "${variants[@]}"; do
        late "check $v" && continue
        env $(envs "$v") "$bin/orthrus" bench $(flags "$v") -m "$work/$preset-$t.gguf" --head "$work/$preset-$t.head.gguf" \
            --random-prompt-len "${PROMPT_LEN:-512}" -n 128 --random-prompts "${CHECK:-20}" --check --json \
            > "$res/check-$t-$(tag "$v").json" 2>> "$work/err.txt" || true
    done
fi
if [ -n "${TINY:-}" ]; then
    for v in "${variants[@]}"; do
        late "tiny $v" && continue
        env $(envs "$v") "$bin/orthrus" bench $(flags "$v") -m models/tiny-orthrus/tiny-orthrus-q8_0.gguf \
            --prompts-file models/tiny-orthrus/heldout-prompts.json -n 256 --check --json \
            > "$res/tiny-$(tag "$v").json" 2>> "$work/err.txt" || true
    done
fi
tail -n 20 "$work/err.txt" 2>/dev/null || true
cp "$OUT/gpu.txt" "$OUT/build.txt" "$res/"
# The device tool returns at most 8 files: the results travel as one archive (pack).
python3 scripts/gpu/summary.py "$res"
