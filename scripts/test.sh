#!/usr/bin/env bash
# Runs every check and test of the workspace, end-to-end scenarios
# included (they need root: namespaces, iptables), on the local runtime and
# on a real single-node Kubernetes. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The scenarios run the binaries: build them before the tests.
cargo build --workspace --bins --locked
# The Kubernetes scenarios run on the project's single-node Kubernetes:
# its binaries (built once, 7-13 minutes cold, then cached) and its images
# (the mesh's from a release build, packed without a container engine).
cargo xtask node prepare
cargo test --workspace --locked -- --include-ignored --test-threads=2
