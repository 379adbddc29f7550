#!/usr/bin/env bash
# Run ON THE GPU MACHINE, last in a device call: packs everything under $OUT
# into $OUT/all.tgz and leaves only that (the device tool brings back at most
# 8 files; kernel tests, variants and a trace together write more).
set -euo pipefail
OUT=${OUT:?}
tar -czf /tmp/all.tgz -C "$OUT" .
find "$OUT" -mindepth 1 -delete
mv /tmp/all.tgz "$OUT/"
