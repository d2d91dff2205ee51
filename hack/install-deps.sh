#!/usr/bin/env bash
# Installs what building, running and testing Stratus needs and a fresh Debian 12 machine lacks.
#
# Every package is named once, in the table below, with what the build or the tests read from
# it and why. A package is installed when that thing is missing: the check is the file or the
# command that is actually used, not the package's name (issue 8: `protoc` was there, but the
# well-known `.proto` files it imports come from another package, and the build failed).
#
# `hack/install-deps.sh --bench` also installs what the benchmarks (hack/bench) run beside
# Stratus: wrk and nginx.
#
# Idempotent: does nothing when everything is there. Fails with the name of the package that
# could not be installed. Rust (cargo, rustc) is not installed here: install it with rustup.
set -euo pipefail

# package | what must exist ("cmd:NAME" on the PATH, or "file:PATH") | why
deps=(
  "protobuf-compiler|cmd:protoc|protoc: the build scripts of stratus-api and etcd-client generate Rust from .proto files"
  "libprotobuf-dev|file:/usr/include/google/protobuf/timestamp.proto|the well-known types (google/protobuf/*.proto) that proto/stratus/v1 imports; only a Recommends of protobuf-compiler"
  "gcc|cmd:cc|the linker cargo calls, and the C parts of ring (rustls) and of mimalloc (the control plane's allocator)"
  "libc6-dev|file:/usr/include/stdio.h|C headers and crt files for linking, and for the static example image (+crt-static)"
  "ca-certificates|file:/etc/ssl/certs/ca-certificates.crt|cargo fetches crates from crates.io over HTTPS"
  "curl|cmd:curl|hack/images.sh asks the local registry whether it answers"
  "etcd-server|cmd:etcd|the store conformance suite, the benchmark and the end-to-end tests start a real etcd"
  "docker-registry|cmd:docker-registry|hack/images.sh serves the example workload image from a local registry on 127.0.0.1:5000"
  "procps|cmd:kill|tests stop servers with kill -INT/-TERM to check graceful shutdown"
  "python3|cmd:python3|hack/schemathesis.sh runs Schemathesis (from PyPI) against the API's OpenAPI document"
  "python3-venv|file:/usr/lib/python3.11/ensurepip/__init__.py|hack/schemathesis.sh installs Schemathesis into a virtual environment of its own (python3 -m venv needs ensurepip)"
  "chromium|cmd:chromium|the web console's tests (apiserver/tests/console.rs) drive a real headless Chromium"
  "chromium-driver|file:/usr/bin/chromedriver|the console's tests talk WebDriver to Chromium through chromedriver"
  "prometheus|cmd:prometheus|the observability test (e2e/tests/control_plane.rs) scrapes every component of stratus up with manifests/observability/prometheus.yml"
)

if [ "${1:-}" = "--bench" ]; then
  deps+=(
    "wrk|cmd:wrk|stratus-bench gateway loads the gateway, nginx and the workload with wrk"
    "nginx|cmd:nginx|stratus-bench gateway compares the gateway with nginx as a reverse proxy"
    "linux-perf|cmd:perf|profiling the gateway under wrk (perf record -g; docs/benchmarks.md)"
  )
fi

have() { # $1: "cmd:NAME" or "file:PATH"
  case "$1" in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    file:*) [ -e "${1#file:}" ] ;;
    *) echo "install-deps.sh: bad check '$1'" >&2; exit 2 ;;
  esac
}

missing=()
for row in "${deps[@]}"; do
  IFS='|' read -r package check why <<<"$row"
  have "$check" || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get update -qq; then
    echo "error: apt-get update failed; cannot install ${missing[*]}" >&2
    exit 1
  fi
  # One at a time, so that a failure names the package.
  for package in "${missing[@]}"; do
    if ! log="$($sudo apt-get install -y -qq --no-install-recommends "$package" 2>&1)"; then
      echo "$log" | tail -n 20 >&2
      echo "error: apt-get could not install $package" >&2
      exit 1
    fi
  done
  # Check again: a package that installed but did not bring what it was installed for is a
  # broken assumption in the table above, and the build would fail later with a worse message.
  for row in "${deps[@]}"; do
    IFS='|' read -r package check why <<<"$row"
    if ! have "$check"; then
      echo "error: $package is installed but ${check#*:} is still missing (needed for: $why)" >&2
      exit 1
    fi
  done
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
