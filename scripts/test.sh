#!/usr/bin/env bash
# Runs every check and test of the workspace, end-to-end scenarios
# included (they need root: namespaces, iptables). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The scenarios run the binaries: build them before the tests.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --include-ignored --test-threads=2
