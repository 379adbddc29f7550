#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry.tar.xz):
# trains the bundled tiny Orthrus model from scratch (models/train/: tokenizer
# and data from this machine's Python standard library, base, greedy teacher
# data, diffusion view), converts it, and benchmarks it on the GPU (ours, ar
# and orthrus mode, on held-out prompts). One base; two diffusion views train
# side by side on it, one per loss weighting (uniform, prefix), and the one
# with more held-out tokens per step is kept. libggml-cuda builds on the CPU
# meanwhile. Results and the HF checkpoint go to $OUT (or ./gpu-out).
# BASE_MIN / DIFF_MIN set the training minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/start.sh
work=/tmp/orthrus-train; rm -rf "$work"; mkdir -p "$work"

t0=$(date +%s)
python3 models/train/prepare_data.py "$work/data" 2> "$OUT/data.txt"
common=(--base-minutes "${BASE_MIN:-2}" --diff-minutes "${DIFF_MIN:-4}" --sequences 16384 ${TRAIN_ARGS:-})
python3 models/train/train.py "$work/data" "$work/uniform" "${common[@]}" --weighting uniform \
    --save-base "$work/base.pt" 2> "$OUT/train-uniform.txt" &
first=$!
until [ -f "$work/base.pt" ]; do
    kill -0 $first 2>/dev/null || { tail -20 "$OUT/train-uniform.txt"; exit 1; }
    sleep 2
done
python3 models/train/train.py "$work/data" "$work/prefix" "${common[@]}" --weighting prefix \
    --from-base "$work/base.pt" 2> "$OUT/train-prefix.txt" &
second=$!
wait $first || { tail -20 "$OUT/train-uniform.txt"; exit 1; }
wait $second || { tail -20 "$OUT/train-prefix.txt"; exit 1; }
echo "data + training: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train-uniform.txt"
best=$(python3 -c 'import json,sys; r={w: json.load(open(f"{sys.argv[1]}/{w}/train.json"))["diffusion_final"]["tokens_per_step"] for w in ("uniform","prefix")}; print(r, file=sys.stderr); print(max(r, key=r.get))' "$work")
echo "kept: $best" | tee "$OUT/kept.txt"
mv "$work/$best" "$OUT/tiny-orthrus"
cp "$work/data/prompts.json" "$OUT/"
grep -hE "base:|diffusion \(|greedy data" "$OUT"/train-*.txt

m="$work/tiny-q8_0.gguf"
"$bin/orthrus-convert" "$OUT/tiny-orthrus" -o "$m" --type q8_0 > /dev/null
wait_for_cuda
"$bin/orthrus" bench -m "$m" -N 256 --prompts-file "$work/data/prompts.json" --check --json > "$OUT/bench-cuda.json" 2> "$work/bench.err" || tail -5 "$work/bench.err"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d.get("check") or {}; print([(r["mode"], round(r["generation_tokens_per_second"]), round(r["step_ms"], 3), round(r["mean_accepted"], 2)) for r in d["results"]], d.get("pass_ms"), "identical", c.get("identical"), "of", c.get("prompts"))' "$OUT/bench-cuda.json" || true
# The device tool returns at most 8 files of at most 16 MiB each: the HF
# checkpoint travels as one compressed archive, the logs as another.
cd "$OUT"
tar -czf /tmp/checkpoint.tgz tiny-orthrus
tar -czf /tmp/logs.tgz train-*.txt kept.txt data.txt build.txt gpu.txt prompts.json bench-cuda.json
rm -rf ./* && mv /tmp/checkpoint.tgz /tmp/logs.tgz .
cp "$m" tiny-orthrus-q8_0.gguf
ls -la
