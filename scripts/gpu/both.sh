#!/usr/bin/env bash
# Run ON THE GPU MACHINE, as a whole device call (carry gpu-carry.tar.xz, and
# llama-src.tar.xz when llama-bench is to be built by a later call): the
# Qwen3-8B and Qwen3-1.7B shapes under the same VARIANTS, in one call of at
# most 10 minutes, as session 11 ran them by hand:
#   - unpacks the archive first, so that the 1.7B models are written in the
#     background while ggml-cuda builds and the 8B runs (start.sh then finds
#     the archive unpacked and does not unpack it again);
#   - variants.sh on the 8B (TYPES8, default q4_k_m; KERNEL_TEST=1 first, unless
#     KERNEL_TEST=0), then on the 1.7B (TYPES17, default "q4_k_m q8_0");
#   - everything under $OUT packed into one archive (pack.sh).
#   VARIANTS   as for variants.sh (default "-")
#   CHECK8, CHECK17  prompts of the greedy check (default 2 and 3)
#   BUDGET     seconds from the start after which no further run starts (default 470)
# LLAMA=1 in the environment (with llama-bench built by build-llama.sh in an
# earlier call on this machine) adds its rows; the default here is LLAMA=0.
set -uo pipefail
cd "$(dirname "$0")/../.."
export DEADLINE=$(( $(date +%s) + ${BUDGET:-470} ))
export LLAMA=${LLAMA:-0} ROUNDS=${ROUNDS:-1} VARIANTS=${VARIANTS:--}
tar -xJf gpu-carry.tar.xz && md5sum gpu-carry.tar.xz | cut -d' ' -f1 > /tmp/gpu-carry.md5
types17=${TYPES17:-q4_k_m q8_0}
LD_LIBRARY_PATH=$PWD/gpu-carry/bin bash scripts/gpu/models.sh qwen3-1.7b $types17 > /tmp/models-1.7b.log 2>&1 &
m17=$!
KERNEL_TEST=$([ "${KERNEL_TEST:-1}" = 0 ] || echo 1) PRESET=qwen3-8b TYPES="${TYPES8:-q4_k_m}" CHECK=${CHECK8:-2} \
    bash scripts/gpu/variants.sh > /tmp/both-8b.log 2>&1
rc=$?
grep -v "Graph id" /tmp/both-8b.log | tail -20
wait $m17 || tail -5 /tmp/models-1.7b.log
# A kernel test that failed (or a build that did) stops the call here.
if [ $rc = 0 ]; then
    KERNEL_TEST= PRESET=qwen3-1.7b TYPES="$types17" CHECK=${CHECK17:-3} \
        bash scripts/gpu/variants.sh > /tmp/both-1.7b.log 2>&1
    grep -v "Graph id" /tmp/both-1.7b.log | tail -20
fi
bash scripts/gpu/pack.sh
exit $rc
