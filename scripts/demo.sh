#!/usr/bin/env bash
# Builds the mesh and starts the demo on the local runtime (as root).
# Stop it with: target/debug/meshctl local down
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --workspace --bins --locked
exec target/debug/meshctl demo "$@"
