#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration and
# end-to-end tests, which also drive the Python cross-checks), the Python
# tests of the fixture scripts, and a short fuzzing run of the GGUF reader.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace 2>&1
# The Python tests drive the binaries (converter, server), built with the test
# profile (the dev profile's settings) so that they reuse every crate `cargo
# test` just compiled: under `dev` the same crates hash apart, and llama.cpp is
# compiled a second time (3.7 of CI's 25 minutes).
cargo build --workspace --bins --profile test 2>&1
python3 -m pytest -q tests/python
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
