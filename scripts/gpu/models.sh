#!/usr/bin/env bash
# Run ON THE GPU MACHINE: writes the random-weight models the benchmarks use,
# /tmp/orthrus-gpu/PRESET-TYPE.gguf (a `--split` Qwen3 base) and
# PRESET-TYPE.head.gguf, for each TYPE, unless they are there already:
#   models.sh PRESET TYPE...      (PRESET: qwen3-1.7b, qwen3-8b; see make_fixtures.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=$1; shift
work=/tmp/orthrus-gpu; mkdir -p "$work"
bin=$PWD/gpu-carry/bin
export LD_LIBRARY_PATH=$bin
missing=()
for t in "$@"; do [ -f "$work/$preset-$t.head.gguf" ] || missing+=("$t"); done
[ ${#missing[@]} -gt 0 ] || exit 0
[ -f "$work/$preset/config.json" ] || python3 models/make_fixtures.py preset "$preset" "$work/$preset" > /dev/null
for t in "${missing[@]}"; do
    t0=$(date +%s)
    # The converter renames each file into place when it is whole, the head last.
    "$bin/orthrus-convert" "$work/$preset" -o "$work/$preset-$t.gguf" --type "$t" --split > /dev/null
    echo "$preset $t converted in $(( $(date +%s) - t0 )) s"
done
rm -rf "${work:?}/$preset"
