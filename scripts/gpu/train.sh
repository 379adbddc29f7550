#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry.tar.xz):
# trains the bundled tiny Orthrus model from scratch (models/train/: tokenizer
# and data from this machine's Python standard library and installed packages,
# base, greedy teacher data, diffusion view), converts it, and benchmarks it
# on the GPU: ours in ar and orthrus mode on the held-out prompts, and
# llama.cpp on the `--split` base. libggml-cuda builds on the CPU meanwhile.
# Results go to $OUT (or ./gpu-out): the HF checkpoint and the logs as two
# archives, and the Q8_0 GGUF.
#
#   BASE_MIN / DIFF_MIN   training minutes (default 3 / 4)
#   WEIGHTINGS            diffusion loss weightings to train side by side on
#                         one base, the best kept (default: prefix)
#   TRAIN_ARGS            more train.py arguments
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-train; rm -rf "$work"; mkdir -p "$work"
weightings=(${WEIGHTINGS:-prefix})

t0=$(date +%s)
python3 models/train/prepare_data.py "$work/data" --extra-mb "${EXTRA_MB:-64}" 2> "$OUT/data.txt"
common=(--base-minutes "${BASE_MIN:-3}" --diff-minutes "${DIFF_MIN:-4}" --layers 8 --batch 128 --diff-batch 128
        --sequences 16384 ${TRAIN_ARGS:-})
first=${weightings[0]}
PYTHONUNBUFFERED=1 python3 models/train/train.py "$work/data" "$work/$first" "${common[@]}" --weighting "$first" \
    --save-base "$work/base.pt" 2> "$OUT/train-$first.txt" &
pids=($!)
for w in "${weightings[@]:1}"; do
    until [ -f "$work/base.pt" ]; do
        kill -0 "${pids[0]}" 2>/dev/null || { tail -20 "$OUT/train-$first.txt"; exit 1; }
        sleep 2
    done
    PYTHONUNBUFFERED=1 python3 models/train/train.py "$work/data" "$work/$w" "${common[@]}" --weighting "$w" \
        --from-base "$work/base.pt" 2> "$OUT/train-$w.txt" &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { tail -20 "$OUT/train-${weightings[$i]}.txt"; exit 1; }
done
echo "data + training: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train-$first.txt"
best=$(python3 -c 'import json,sys; r={w: json.load(open(f"{sys.argv[1]}/{w}/train.json"))["diffusion_final"]["tokens_per_step"] for w in sys.argv[2:]}; print(r, file=sys.stderr); print(max(r, key=r.get))' "$work" "${weightings[@]}")
echo "kept: $best" | tee "$OUT/kept.txt"
mv "$work/$best" "$OUT/tiny-orthrus"
cp "$work/data/prompts.json" "$OUT/"
grep -hE "base:|diffusion \(|greedy data|diffusion step" "$OUT"/train-*.txt

m="$work/tiny-q8_0.gguf"
"$bin/orthrus-convert" "$OUT/tiny-orthrus" -o "$m" --type q8_0 --name tiny-orthrus > /dev/null
"$bin/orthrus-convert" "$OUT/tiny-orthrus" -o "$work/split-q8_0.gguf" --type q8_0 --split > /dev/null
wait_for_cuda
"$bin/orthrus" bench -m "$m" -n 256 --prompts-file "$work/data/prompts.json" --check --json > "$OUT/bench-cuda.json" 2> "$work/bench.err" || tail -5 "$work/bench.err"
"$bin/llama_bench" "$work/split-q8_0.gguf" 3 > "$OUT/llama-tiny.json" 2> "$work/llama.err" || tail -5 "$work/llama.err"
# llama.cpp's own llama-bench too, when build-llama.sh has built it by now.
[ -x /tmp/lb/bin/llama-bench ] && LD_LIBRARY_PATH=/tmp/lb/bin /tmp/lb/bin/llama-bench -m "$work/split-q8_0.gguf" -p 512 -n 128 -ngl 99 -fa 1 -r 3 -o json \
    > "$OUT/llamabench-tiny.json" 2>> "$work/llama.err" || true
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d.get("check") or {}; print([(r["mode"], round(r["generation_tokens_per_second"]), round(r["step_ms"], 3), round(r["mean_accepted"], 2)) for r in d["results"]], d.get("pass_ms"), "identical", c.get("identical"), "of", c.get("prompts"))' "$OUT/bench-cuda.json" || true
cat "$OUT/llama-tiny.json" "$OUT/llamabench-tiny.json" || true
# The device tool returns at most 8 files of at most 16 MiB each: the HF
# checkpoint travels as one compressed archive, the logs as another.
cd "$OUT"
tar -czf /tmp/checkpoint.tgz tiny-orthrus
tar -czf /tmp/logs.tgz train-*.txt kept.txt data.txt build.txt gpu.txt prompts.json bench-cuda.json llama-tiny.json llamabench-tiny.json || true
rm -rf ./* && mv /tmp/checkpoint.tgz /tmp/logs.tgz .
cp "$m" tiny-orthrus-q8_0.gguf
ls -la
