#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying
# gpu-carry.tar.xz), as one device call: a published Orthrus configuration
# (NAME, default Orthrus-Qwen3-1.7B; block 32; random weights, so drafts are
# rarely accepted) as Q4_K_M --split, against llama.cpp's llama_* code on the
# same base file:
#   - bench: ar, orthrus (--draft-max 15, then 31) and auto, with the pass
#     and step costs of every draft length auto's graphs serve (step_7,
#     step_15, step_31, ...), after 512-token prompts and after 8K and 32K
#     ones (LONG_PROMPTS of each, default 3; the modes take turns going
#     first);
#   - the bundled trained model (real acceptance): ar, orthrus and auto, on
#     its held-out prompts and on its shifting ones (prose, then code: the
#     acceptance rises mid-generation), with how many texts equal ar's
#     (greedy text parts between modes at near-ties, and each mode is timed
#     on its own); TINY=0 leaves it out.
# Results go to $OUT as JSON, one file a run; each bench's steps (drafts,
# acceptance, time, whether it built graphs, the tokens) to $OUT/steps/, with
# the acceptance oracle of the shifting prompts' orthrus text, for replaying
# auto mode's choices offline; then all of it into $OUT/all.tgz (pack.sh):
# the device tool brings back 8 files at most, none three folders down.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-published; mkdir -p "$work"
name=${NAME:-Orthrus-Qwen3-1.7B}
long=${LONG_PROMPTS:-3}
m=$work/$name-q4_k_m.gguf; h=$work/$name-q4_k_m.head.gguf
python3 models/make_fixtures.py published "$name" "$work/$name" > "$work/fixture.txt" 2>&1 \
    || { tail -5 "$work/fixture.txt"; exit 1; }
"$bin/orthrus-convert" "$work/$name" -o "$m" --type q4_k_m --split > "$work/convert.txt" 2>&1 \
    || { tail -5 "$work/convert.txt"; exit 1; }
wait_for_cuda
run() { # NAME ARGS...: one JSON result, its stderr's tail on failure
    local out=$1; shift
    "$@" > "$OUT/$out.json" 2> "$work/$out.err" || { echo "$out failed:"; tail -5 "$work/$out.err"; }
}
mkdir -p "$OUT/steps"
run llama-q4_k_m "$bin/llama_bench" "$m" 3 512
run bench-d15 "$bin/orthrus" bench --steps-out "$OUT/steps/d15.json" -m "$m" --head "$h" --random-prompt-len 512 --random-prompts 3 -n 128 --draft-max 15 --json
run bench-d31 "$bin/orthrus" bench --steps-out "$OUT/steps/d31.json" -m "$m" --head "$h" --random-prompt-len 512 --random-prompts 3 -n 128 --draft-max 31 --check --json
run bench-8k "$bin/orthrus" bench --steps-out "$OUT/steps/8k.json" -m "$m" --head "$h" -c 8704 --random-prompt-len 8192 --random-prompts "$long" -n 64 --draft-max 15 --json
run bench-32k "$bin/orthrus" bench --steps-out "$OUT/steps/32k.json" -m "$m" --head "$h" -c 33024 --random-prompt-len 32768 --random-prompts "$long" -n 64 --draft-max 15 --json
if [ "${TINY:-1}" != 0 ]; then
    run bench-tiny "$bin/orthrus" bench --steps-out "$OUT/steps/tiny.json" -m models/tiny-orthrus/tiny-orthrus-q8_0.gguf \
        --prompts-file models/tiny-orthrus/heldout-prompts.json -n 256 --check --json
    run bench-shifting "$bin/orthrus" bench --steps-out "$OUT/steps/shifting.json" -m models/tiny-orthrus/tiny-orthrus-q8_0.gguf \
        --prompts-file models/tiny-orthrus/shifting-prompts.json -n 256 --check --json
    # The acceptance oracle of the text the orthrus run wrote here, for
    # replays priced as this GPU ran (greedy text parts between devices).
    python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["tokens"]["orthrus"], sys.stdout)' \
        "$OUT/steps/shifting.json" > "$work/shifting-tokens.json" \
        && "$bin/acceptance_oracle" models/tiny-orthrus/tiny-orthrus-q8_0.gguf models/tiny-orthrus/shifting-prompts.json \
            256 15 "$work/shifting-tokens.json" > "$OUT/steps/shifting-oracle.json" 2> "$work/oracle.err" \
        || { echo "oracle failed:"; tail -3 "$work/oracle.err"; }
fi
python3 - "$OUT" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("*.json")):
    try:
        d = json.loads(f.read_text())
    except ValueError:
        print(f.name, "unreadable"); continue
    if "results" not in d:
        print(f.name, json.dumps(d)); continue
    modes = {r["mode"]: round(r["generation_tokens_per_second"], 1) for r in d["results"]}
    ar_steps = {r["mode"]: round(r["ar_step_ms"], 3) for r in d["results"] if r["ar_steps"]}
    p = d.get("pass_ms") or {}
    steps = {k: v for k, v in p.items() if k.startswith("step_") or k == "ar_1"}
    built = {r["mode"]: (r["draft_steps"], r.get("build_steps"), round(r.get("build_ms", 0), 1))
             for r in d["results"]}
    c = d.get("check") or {}
    same = f'{c["identical"]}/{c["compared"]}' if c else "unchecked"
    print(f.name, "gen tok/s", modes, "auto/best", round(d["auto_vs_best"], 3),
          "ar step ms", ar_steps, "ms", steps, "drafting steps, building steps, their ms", built,
          "texts as ar's", same)
EOF
OUT="$OUT" bash scripts/gpu/pack.sh
