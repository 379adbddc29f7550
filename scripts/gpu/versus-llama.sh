#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry.tar.xz):
# our AR decoding against llama.cpp on the same files (Qwen3-1.7B shapes,
# random weights, Q4_K_M and Q8_0; llama.cpp gets the `--split` base), ROUNDS
# rounds taken in turn (a shared GPU's speed drifts between minutes, so one
# run of each is not a fair ratio). Then, on Q4_K_M, one round each with CUDA
# graphs off (GGML_CUDA_DISABLE_GRAPHS) and with ggml's graph optimisation on
# (GGML_CUDA_GRAPH_OPT=1), to see what each changes for both engines.
# Results go to $OUT (or ./gpu-out); a summary is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-gpu; mkdir -p "$work"
preset=${PRESET:-qwen3-1.7b}
python3 models/make_fixtures.py preset "$preset" "$work/$preset" > /dev/null 2>&1
for t in ${TYPES:-q4_k_m q8_0}; do
    "$bin/orthrus-convert" "$work/$preset" -o "$work/$preset-$t.gguf" --type $t --split > /dev/null
done
wait_for_cuda
round() { # TAG TYPE [ENV=VALUE...]
    local tag=$1 t=$2; shift 2
    local m="$work/$preset-$t.gguf"
    env "$@" "$bin/llama_bench" "$m" 2 > "$OUT/llama-$t-$tag.json" 2>/dev/null || true
    env "$@" "$bin/orthrus" bench -m "$m" --head "$work/$preset-$t.head.gguf" --random-prompt-len 512 -n 128 \
        --random-prompts 3 --json > "$OUT/ours-$t-$tag.json" 2>/dev/null || true
}
for r in $(seq "${ROUNDS:-3}"); do
    for t in ${TYPES:-q4_k_m q8_0}; do round "r$r" $t; done
done
round nographs q4_k_m GGML_CUDA_DISABLE_GRAPHS=1
round graphopt q4_k_m GGML_CUDA_GRAPH_OPT=1
python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
for r in sorted(glob.glob(f"{out}/llama-*.json")):
    tag = os.path.basename(r)[len("llama-"):-len(".json")]
    try:
        l = json.load(open(r)); o = json.load(open(f"{out}/ours-{tag}.json"))
    except (OSError, ValueError) as e:
        print(tag, "missing:", e); continue
    ar = [x for x in o["results"] if x["mode"] == "ar"][0]
    orx = [x for x in o["results"] if x["mode"] == "orthrus"][0]
    print(f"{tag}: llama tg128 {l['tg128']:.1f} pp512 {l['pp512']:.0f} | ours ar {ar['generation_tokens_per_second']:.1f} "
          f"pp {ar['prompt_tokens_per_second']:.0f} | ratio tg {ar['generation_tokens_per_second'] / l['tg128']:.3f} "
          f"pp {ar['prompt_tokens_per_second'] / l['pp512']:.3f} | step ratio {orx['step_ms'] / ar['step_ms']:.2f} | pass_ms {o['pass_ms']}")
PY
