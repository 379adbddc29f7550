#!/usr/bin/env bash
# Run ON THE GPU MACHINE, after variants.sh (its models and libggml-cuda.so in
# place): where the GPU's time goes, per kernel, in greedy `ar` and `orthrus`
# decoding (Nsight Systems, kernels inside CUDA graphs traced one by one).
# Nsight Compute when there is no Nsight Systems (the H200 machine has only
# ncu). A 64-token prompt, then N tokens (128; 12 under ncu); kernels grouped
# by name, in microseconds per generated token, per step and per call. Into
# $OUT/profile-MODE-VARIANT.txt.
#   PRESET, TYPE   the model (default qwen3-1.7b, q4_k_m)
#   VARIANTS       environments as in variants.sh (default "-")
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1 || true)
[ -n "$nsys$ncu" ] || { echo "neither nsys nor ncu on this machine" | tee "$OUT/profile.txt"; exit 0; }
m=/tmp/orthrus-gpu/${PRESET:-qwen3-1.7b}-${TYPE:-q4_k_m}
ids=$(seq -s, 1000 1063)
# Nsight Compute times every kernel alone, slowly: fewer tokens there.
n=${N:-$([ -n "$nsys" ] && echo 128 || echo 12)}
for v in ${VARIANTS:--}; do
    tag=$(echo "$v" | tr '=,' '-_')
    envs=$([ "$v" = - ] || echo "$v" | tr , ' ')
    for mode in ar orthrus; do
        rep=/tmp/prof-$mode-$tag
        run=("$bin/orthrus" run -m "$m.gguf" --head "$m.head.gguf" --prompt-ids "$ids" -n "$n" --mode "$mode" --ignore-eos --json)
        if [ -n "$nsys" ]; then
            env $envs "$nsys" profile --cuda-graph-trace=node --force-overwrite true -o "$rep" "${run[@]}" \
                > "$rep.json" 2> "$rep.err" || { tail -5 "$rep.err"; continue; }
            "$nsys" stats -q -r cuda_gpu_kern_sum -f csv -o "$rep" "$rep.nsys-rep" > /dev/null 2>&1 || true
        else
            # Nsight Compute: each kernel timed alone (serialized, at its locked
            # clocks), CUDA graphs off; the same table from its per-kernel rows.
            env $envs GGML_CUDA_DISABLE_GRAPHS=1 "$ncu" --metrics gpu__time_duration.sum --csv --print-units base \
                --log-file "$rep.ncu.csv" "${run[@]}" > "$rep.json" 2> "$rep.err" || { tail -5 "$rep.err"; continue; }
            python3 - "$rep" <<'PY'
import csv, sys
rep = sys.argv[1]
lines = open(rep + ".ncu.csv").read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
tot = {}
for r in csv.DictReader(lines[start:]):
    if r.get("Metric Name") == "gpu__time_duration.sum":
        t = tot.setdefault(r["Kernel Name"], [0.0, 0])
        t[0] += float(r["Metric Value"].replace(",", ""))
        t[1] += 1
with open(rep + "_cuda_gpu_kern_sum.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["Total Time (ns)", "Instances", "Name"])
    for name, (ns, n) in tot.items():
        w.writerow([ns, n, name])
PY
        fi
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
    # The name with its template arguments (the weight type, the columns),
    # without its parameters or namespaces.
    name, depth, cut = re.sub(r"^void ", "", r["Name"]), 0, None
    for i, ch in enumerate(name):
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    short = re.sub(r"\b\w+::", "", name[:cut])
    g = groups.setdefault(short, [0.0, 0])
    g[0] += float(str(r["Total Time (ns)"]).replace(",", "")) / 1e3
    g[1] += int(str(r["Instances"]).replace(",", ""))
total = sum(g[0] for g in groups.values())
print(f"{mode} {variant}: {gen} tokens, {steps} steps, GPU kernels {total / 1e3:.2f} ms "
      f"({total / gen:.1f} us per token, {total / steps:.1f} us per step; the 64-token prompt included)")
print(f"{'kernel':60s} {'us/token':>9s} {'us/step':>9s} {'calls/step':>10s} {'us/call':>8s}")
for name, (us, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:24]:
    print(f"{name[:60]:60s} {us / gen:9.1f} {us / steps:9.1f} {n / steps:10.1f} {us / n:8.2f}")
PY
        cat "$OUT/profile-$mode-$tag.txt"
    done
done
