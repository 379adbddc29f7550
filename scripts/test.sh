#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration and
# end-to-end tests, which also drive the Python cross-checks), the Python
# tests of the fixture scripts, and a short fuzzing run of the GGUF reader.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace 2>&1
# The Python tests drive the binaries (converter, server), built with the test
# profile (the dev profile's settings) and the tests' dependencies' features
# (--tests), so that they reuse every crate `cargo test` just compiled: under
# `dev`, or without the tests' features (bitflags' `std`, which reaches
# llama.cpp's bindgen), llama.cpp is compiled a second time (3-3.5 minutes of
# CI's 24).
cargo build --workspace --bins --tests --profile test 2>&1
python3 -m pytest -q tests/python
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
