#!/usr/bin/env bash
# Run ON THE GPU MACHINE, in two device calls on one warm machine (each call
# is limited to 10 minutes, training and benchmarks together take longer):
#
#   train-then-versus.sh start    train.sh, detached (setsid), writing to
#                                 /tmp/train-out; beside it, at low priority,
#                                 llama.cpp's llama-bench (build-llama.sh, when
#                                 llama-src.tar.xz is carried) and the random
#                                 models of Qwen3-8B shapes (models.sh);
#                                 returns when training is done or
#                                 after LIMIT seconds (default 540), with the
#                                 log so far
#   train-then-versus.sh finish   waits for train.sh, returns its results, then
#                                 variants.sh on the Qwen3-8B shapes (the GPU is
#                                 free of the training by then), its archive too
#
# The second call must come within the machine's warm time (30 s) of the first.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
limit=${LIMIT:-540}
t0=$(date +%s)
wait_train() {
    while [ ! -f /tmp/train-out.rc ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 5; done
}
detach() { # LOG COMMAND...: runs COMMAND in its own session, so it outlives this call
    local log=$1; shift
    setsid nice -n 10 "$@" < /dev/null > "$log" 2>&1 &
}
case "${1:-}" in
start)
    rm -rf /tmp/train-out /tmp/train-out.rc; mkdir -p /tmp/train-out
    OUT=/tmp/train-out setsid bash -c 'bash scripts/gpu/train.sh > /tmp/train-out.log 2>&1; echo $? > /tmp/train-out.rc' \
        < /dev/null > /dev/null 2>&1 &
    # train.sh unpacks gpu-carry; the model writers need its converter.
    sleep 20
    [ -f llama-src.tar.xz ] && detach /tmp/build-llama.log bash scripts/gpu/build-llama.sh
    detach /tmp/models.log bash scripts/gpu/models.sh qwen3-8b q4_k_m q8_0
    wait_train
    cat /tmp/train-out.log; tail -3 /tmp/train-out/train-*.txt 2>/dev/null
    [ -f /tmp/train-out.rc ] && echo "train.sh exited $(cat /tmp/train-out.rc)" || echo "train.sh still running"
    cat /tmp/build-llama.log /tmp/models.log
    ;;
finish)
    wait_train
    cat /tmp/train-out.log
    [ -f /tmp/train-out.rc ] || { echo "train.sh still running after ${limit} s"; exit 1; }
    cp /tmp/train-out/* "$out/" 2>/dev/null
    cat /tmp/build-llama.log /tmp/models.log
    PRESET=qwen3-8b VARIANTS=- ROUNDS=${ROUNDS:-2} CHECK=${CHECK:-20} bash scripts/gpu/variants.sh
    ls -la "$out"
    ;;
*)
    echo "usage: $0 start|finish" >&2; exit 2 ;;
esac
