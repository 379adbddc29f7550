#!/usr/bin/env bash
# Runs every check of the project: formatting and lints, the Rust workspace's
# tests (unit, integration, end to end), the Python tests of the fixture
# scripts, the reference and the binaries, and a short fuzzing run of the
# GGUF reader, the chat template renderer and the checkpoint readers (the
# seconds split between them). Each phase's time goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

phase() {
    local t0=$SECONDS
    echo "== $*" >&2
    "$@"
    echo "== $1 ${2:-}: $((SECONDS - t0)) s" >&2
}

phase cargo fmt --all --check
# Everything below builds with the test profile (the dev profile's settings),
# so that clippy, the tests and the binaries share every compiled crate and
# llama.cpp is compiled once (see Cargo.toml's build-override).
phase cargo clippy --workspace --all-targets --profile test -- -D warnings
phase cargo test --workspace
# The Python tests drive the binaries (converter, server): built with the tests'
# profile and features, they reuse every crate `cargo test` just compiled.
phase cargo build --workspace --bins --tests --profile test
# Two workers, a test file each at a time (its module fixtures, such as the
# server, made once): most of the Python tests' time is the gguf package reading
# whole-model files and the server's subprocesses, which run side by side.
phase python3 -m pytest -q -n 2 --dist loadfile tests/python
phase bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
