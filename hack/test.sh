#!/usr/bin/env bash
# Runs every test of Stratus: unit, integration (in-process servers on 127.0.0.1:0), the store
# conformance suite against the embedded store and a real etcd, and the end-to-end tests that
# start the real binaries and drive the real Docker engine. Debug build, as CI. Then the
# cluster's chaos tests: a three-node cluster in containers (hack/cluster.sh) that loses a node,
# the controllers' leader, an API server, an etcd member and a node's network,
# and restarts every part one at a time, all under load (hack/chaos.sh, about three
# minutes); STRATUS_SKIP_CLUSTER=1 skips them. And the control plane with hollow nodes at a
# small size (stratus-bench scale: it fails when an instance is not placed and running, a node
# loses its lease or one holds more than it allows). Arguments go to cargo nextest (or
# cargo test) and skip the cluster and the scale run.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
# The node agent's Docker tests run the example image from the local registry.
hack/images.sh
# The end-to-end tests run the binaries, so build them first.
cargo build --workspace --bins
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi
if [ $# -eq 0 ]; then
  echo "test: the control plane with 200 hollow nodes and 5,000 instances (stratus-bench scale)"
  cargo build --quiet -p stratus-bench
  scale_out="$(mktemp)"
  target/debug/stratus-bench scale --nodes 200 --instances 5000 --out "$scale_out" || status=$?
  rm -f "$scale_out"
fi
if [ $# -eq 0 ] && [ "${STRATUS_SKIP_CLUSTER:-}" != 1 ]; then
  # A cluster left by an earlier run that stopped half-way is removed first.
  hack/cluster.sh down >/dev/null 2>&1 || true
  cluster=0
  hack/cluster.sh up --nodes 3 && hack/chaos.sh || cluster=$?
  if [ "$cluster" != 0 ]; then
    echo "test: the cluster's chaos tests failed; the cluster's logs:" >&2
    for c in $(docker ps -a --filter label=io.stratus.cluster --format '{{.Names}}'); do
      echo "--- $c" >&2
      docker logs --tail 40 "$c" 2>&1 | sed "s/^/$c: /" >&2 || true
    done
    status=$cluster
  fi
  hack/cluster.sh down
fi
exit "$status"
