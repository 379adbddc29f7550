#!/usr/bin/env bash
# Run ON THE GPU MACHINE, after variants.sh (its models and libggml-cuda.so in
# place): where the GPU's time goes, per kernel, in greedy `ar` and `orthrus`
# decoding (Nsight Systems, kernels inside CUDA graphs traced one by one).
# A 64-token prompt, 128 tokens; kernels grouped by name, in microseconds per
# generated token and per call. Into $OUT/profile-MODE-VARIANT.txt.
#   PRESET, TYPE   the model (default qwen3-1.7b, q4_k_m)
#   VARIANTS       environments as in variants.sh (default "-")
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)
[ -n "$nsys" ] || { echo "no nsys on this machine" | tee "$OUT/profile.txt"; exit 0; }
m=/tmp/orthrus-gpu/${PRESET:-qwen3-1.7b}-${TYPE:-q4_k_m}
ids=$(seq -s, 1000 1063)
for v in ${VARIANTS:--}; do
    tag=$(echo "$v" | tr '=,' '-_')
    envs=$([ "$v" = - ] || echo "$v" | tr , ' ')
    for mode in ar orthrus; do
        rep=/tmp/prof-$mode-$tag
        env $envs "$nsys" profile --cuda-graph-trace=node --force-overwrite true -o "$rep" \
            "$bin/orthrus" run -m "$m.gguf" --head "$m.head.gguf" --prompt-ids "$ids" -n 128 --mode "$mode" \
            --ignore-eos --json > "$rep.json" 2> "$rep.err" || { tail -5 "$rep.err"; continue; }
        "$nsys" stats -q -r cuda_gpu_kern_sum -f csv -o "$rep" "$rep.nsys-rep" > /dev/null 2>&1 || true
        python3 - "$rep" "$mode" "$v" > "$OUT/profile-$mode-$tag.txt" <<'PY'
import csv, json, re, sys
rep, mode, variant = sys.argv[1:4]
run = json.load(open(rep + ".json"))
st = run["stats"]
gen = st.get("generated_tokens") or len(run.get("tokens", [])) or 1
steps = len(run.get("steps", [])) or st.get("steps") or gen
rows = list(csv.DictReader(open(rep + "_cuda_gpu_kern_sum.csv")))
groups = {}
for r in rows:
    name = r["Name"]
    short = re.sub(r"\(.*", "", re.sub(r"^void ", "", name))
    short = re.sub(r"<.*", "", short).split("::")[-1]
    g = groups.setdefault(short, [0.0, 0])
    g[0] += float(r["Total Time (ns)"]) / 1e3
    g[1] += int(r["Instances"])
total = sum(g[0] for g in groups.values())
print(f"{mode} {variant}: {gen} tokens, {steps} steps, GPU kernels {total / 1e3:.2f} ms "
      f"({total / gen:.1f} us per token, {total / steps:.1f} us per step; the 64-token prompt included)")
print(f"{'kernel':40s} {'us/token':>9s} {'us/step':>9s} {'calls/step':>10s} {'us/call':>8s}")
for name, (us, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:18]:
    print(f"{name[:40]:40s} {us / gen:9.1f} {us / steps:9.1f} {n / steps:10.1f} {us / n:8.2f}")
PY
        cat "$OUT/profile-$mode-$tag.txt"
    done
done
