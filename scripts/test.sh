#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration
# tests (real troupe processes, real WebSocket clients over loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --features test-hooks -- -D warnings
echo "== cargo test"
cargo test --workspace --features test-hooks
