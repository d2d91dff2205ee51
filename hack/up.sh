#!/usr/bin/env bash
# Sets up and runs Stratus on this machine: installs what is missing, builds the example
# workload image into a local registry and the `stratus` CLI, and runs `stratus up` in the
# foreground with the example services of manifests/ applied. `stratus up` prints the web
# console's URL (https://127.0.0.1:7070/ui) and how to log in as admin. Stop it with Ctrl-C (workloads
# keep running; `stratus down` removes them). Data lives in ~/.stratus/data (override:
# STRATUS_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
# The example services run the example image from the local registry.
hack/images.sh
cargo build -p stratus-cli --bin stratus
bin="$PWD/target/debug/stratus"
# Put `stratus` on the PATH when cargo's bin directory is there (it is where rustup installs).
if [ -d "$HOME/.cargo/bin" ] && [[ ":$PATH:" == *":$HOME/.cargo/bin:"* ]]; then
  ln -sf "$bin" "$HOME/.cargo/bin/stratus"
  echo "stratus is on your PATH ($HOME/.cargo/bin/stratus -> $bin)"
else
  echo "run the CLI as $bin"
fi
args=(up -f manifests/hello.yaml -f manifests/knative-hello.yaml)
[ -n "${STRATUS_DATA_DIR:-}" ] && args+=(--data-dir "$STRATUS_DATA_DIR")
exec "$bin" "${args[@]}"
