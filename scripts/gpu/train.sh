#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after scripts/gpu/prepare.sh here, carrying gpu-carry):
# trains the bundled tiny Orthrus model from scratch (models/train/: tokenizer
# and data from this machine's Python standard library, base, greedy teacher
# data, diffusion view), converts it, and benchmarks it on the GPU: ours in
# ar and orthrus mode on held-out prompts, and llama.cpp on the --split base.
# libggml-cuda builds on the CPU meanwhile. Results and the HF checkpoint go
# to $OUT (or ./gpu-out). BASE_MIN / DIFF_MIN set the training minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
work=/tmp/orthrus-train; mkdir -p "$work"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
bash scripts/gpu/build-cuda.sh > "$OUT/build.txt" 2>&1 &
build=$!

t0=$(date +%s)
python3 models/train/prepare_data.py "$work/data" 2> "$OUT/data.txt"
python3 models/train/train.py "$work/data" "$OUT/tiny-orthrus" \
    --base-minutes "${BASE_MIN:-2}" --diff-minutes "${DIFF_MIN:-4.5}" --sequences 16384 2> "$OUT/train.txt"
cp "$work/data/prompts.json" "$OUT/"
echo "data + training: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.txt"
tail -4 "$OUT/train.txt"

m="$work/tiny-q8_0.gguf"
"$bin/orthrus-convert" "$OUT/tiny-orthrus" -o "$m" --type q8_0 > /dev/null
"$bin/orthrus-convert" "$OUT/tiny-orthrus" -o "$work/split-q8_0.gguf" --type q8_0 --split > /dev/null
wait $build || { tail -30 /tmp/cmake.log; exit 1; }
cat "$OUT/build.txt"
python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))[:20], open(sys.argv[2], "w"))' "$work/data/prompts.json" "$work/prompts20.json"
args=(--prompts-file "$work/prompts20.json")
"$bin/orthrus" bench -m "$m" -N 256 "${args[@]}" --check --json > "$OUT/bench-cuda.json" 2> "$work/bench.err" || tail -5 "$work/bench.err"
"$bin/llama_bench" "$work/split-q8_0.gguf" 3 > "$OUT/llama-q8_0.json" 2> "$work/llama.err" || tail -5 "$work/llama.err"
cat "$OUT/llama-q8_0.json"
for f in bench-cuda; do
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d.get("check") or {}; print(sys.argv[1], [(r["mode"], round(r["generation_tokens_per_second"]), round(r["step_ms"], 3), round(r["mean_accepted"], 2)) for r in d["results"]], "identical", c.get("identical"), [round(x["top2_gap"], 3) for x in c.get("divergences", [])])' "$OUT/$f.json" || true
done
grep -E "base:|diffusion" "$OUT/train.txt" | tail -4
# The device tool returns at most 8 files of at most 16 MiB each: the HF
# checkpoint travels as one compressed archive, the logs as another.
cd "$OUT"
tar -czf /tmp/checkpoint.tgz tiny-orthrus
tar -czf /tmp/logs.tgz train.txt data.txt build.txt gpu.txt prompts.json bench-cuda.json llama-q8_0.json
rm -rf ./* && mv /tmp/checkpoint.tgz /tmp/logs.tgz "$work/split-q8_0.gguf" "$work/split-q8_0.head.gguf" .
cp "$work/tiny-q8_0.gguf" tiny-orthrus-q8_0.gguf
ls -la
