#!/usr/bin/env bash
# Runs every test of Stratus: unit, integration (in-process servers on 127.0.0.1:0), the store
# conformance suite against the embedded store and a real etcd, and the end-to-end tests that
# start the real binaries and drive the real Docker engine. Debug build, as CI.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
# The node agent's Docker tests run the example image from the local registry.
hack/images.sh
# The end-to-end tests run the binaries, so build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
