#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry.tar.xz):
# our AR decoding against llama.cpp on the same Q4_K_M file of Qwen3-1.7B
# shapes, ROUNDS rounds taken in turn (a shared GPU's speed drifts between
# minutes, so one run of each is not a fair ratio), plus the bundled trained
# model. Results go to $OUT (or ./gpu-out).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-gpu; mkdir -p "$work"
preset=${PRESET:-qwen3-1.7b}; t=q4_k_m
python3 models/make_fixtures.py preset "$preset" "$work/$preset" > /dev/null 2>&1
"$bin/orthrus-convert" "$work/$preset" -o "$work/$preset-$t.gguf" --type $t --split > /dev/null
wait_for_cuda
m="$work/$preset-$t.gguf"
for r in $(seq "${ROUNDS:-3}"); do
    "$bin/llama_bench" "$m" 2 > "$OUT/llama-$r.json" 2>/dev/null || true
    "$bin/orthrus" bench -m "$m" --head "$work/$preset-$t.head.gguf" --random-prompt-len 512 -N 128 \
        --random-prompts 3 --json > "$OUT/ours-$r.json" 2>/dev/null || true
done
"$bin/orthrus" bench -m models/tiny-orthrus/tiny-orthrus-q8_0.gguf --prompts-file models/tiny-orthrus/heldout-prompts.json \
    -N 256 --check --json > "$OUT/tiny-orthrus.json" 2>/dev/null || true
python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
for r in sorted(glob.glob(f"{out}/llama-*.json")):
    n = r.split("-")[-1]
    l = json.load(open(r)); o = json.load(open(f"{out}/ours-{n}"))
    ar = [x for x in o["results"] if x["mode"] == "ar"][0]
    orx = [x for x in o["results"] if x["mode"] == "orthrus"][0]
    print(f"round {n[:-5]}: llama tg128 {l['tg128']:.1f} pp512 {l['pp512']:.0f} | ours ar {ar['generation_tokens_per_second']:.1f} "
          f"pp {ar['prompt_tokens_per_second']:.0f} | ratio tg {ar['generation_tokens_per_second'] / l['tg128']:.3f} "
          f"pp {ar['prompt_tokens_per_second'] / l['pp512']:.3f} | step ratio {orx['step_ms'] / ar['step_ms']:.2f} | pass_ms {o['pass_ms']}")
t = json.load(open(f"{out}/tiny-orthrus.json"))
print("tiny-orthrus", [(x["mode"], round(x["generation_tokens_per_second"]), round(x["mean_accepted"], 2), round(x["step_ms"], 3)) for x in t["results"]], t["pass_ms"], "identical", t["check"]["identical"], "of", t["check"]["prompts"])
PY
