#!/usr/bin/env bash
# Checks that Stratus builds and tests on a machine that has never seen it.
#
# A green CI on a machine that has been used for weeks proves little: whatever was installed by
# hand is still there (issue 8). This script makes a minimal Debian 12 root with debootstrap,
# gives it the host's Rust toolchain read-only (no toolchain can be downloaded here) and a copy of
# this repository (the working tree, committed or not, without target/). The root has what every
# new machine of this kind comes with (Debian 12 with a C toolchain, CA certificates, curl, git,
# procps and Python; see `base` below) and nothing else. Inside it, the script runs:
#
#   1. hack/install-deps.sh      (what a new user runs first, through hack/up.sh or hack/test.sh)
#   2. cargo build --workspace --bins --tests
#   3. every test that needs no Docker engine (all but the stratus-e2e package and the node
#      agent's Docker tests: there is no engine inside the root)
#
# It prints each step with how long it took, and removes the root and everything it mounted when
# it ends: on success, on failure and on Ctrl-C.
#
# Needs root (debootstrap, mount, chroot) and Debian's package mirror (it installs debootstrap if
# missing). Takes about ten minutes on two cores, most of it compiling.
#
# Environment:
#   FRESH_MIRROR   Debian mirror for debootstrap (default: the host's, else deb.debian.org)
#   FRESH_KEEP=1   keep the root after the run, for a look inside (its path is printed)
#   FRESH_BUILD_ONLY=1  stop after the build (no tests)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

started=$SECONDS
step_started=$SECONDS
step() {
  echo
  echo "== [$(date +%H:%M:%S)] $*"
  step_started=$SECONDS
}
took() {
  echo "-- took $((SECONDS - step_started)) s"
}

if [ "$(id -u)" -ne 0 ]; then
  echo "error: hack/fresh-machine.sh needs root (debootstrap, mount, chroot); run it with sudo" >&2
  exit 1
fi

# The host's toolchain, to be mounted read-only: the sysroot has rustc, cargo, clippy, rustfmt and
# the standard library; cargo-nextest is a separate binary.
sysroot="$(rustc --print sysroot)"
nextest="$(command -v cargo-nextest || true)"
if [ -z "$nextest" ]; then
  echo "error: cargo-nextest is not installed (machines of this kind come with it; cargo install cargo-nextest)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  step "installing debootstrap on the host"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  took
fi

mirror="${FRESH_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -n 1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

root="$(mktemp -d /var/tmp/stratus-fresh.XXXXXX)"
mounts=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Processes left inside (etcd, a test server) keep mounts busy: end them first.
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -l "${mounts[$i]}" 2>/dev/null || true
  done
  if [ "${FRESH_KEEP:-}" = 1 ]; then
    echo "kept the root at $root (mounts removed)"
  elif grep -q " $root" /proc/mounts; then
    # Never rm -rf through a mount that is still there: it could reach the host's files.
    echo "error: something is still mounted under $root; not removing it:" >&2
    grep " $root" /proc/mounts >&2
    status=1
  else
    rm -rf --one-file-system "$root"
  fi
  if [ "$status" -eq 0 ]; then
    echo
    echo "fresh-machine: PASSED in $((SECONDS - started)) s"
  else
    echo
    echo "fresh-machine: FAILED (exit $status) after $((SECONDS - started)) s" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

mount_into() { # $1 source, $2 target inside the root, then mount options
  local source="$1" target="$root$2"
  shift 2
  if [ -d "$source" ]; then mkdir -p "$target"; else mkdir -p "$(dirname "$target")"; touch "$target"; fi
  mount "$@" "$source" "$target"
  mounts+=("$target")
}

mount_ro() { # a read-only bind mount of $1 at $2 inside the root
  mount_into "$1" "$2" --bind
  mount -o remount,bind,ro "$root$2"
}

# A new machine of this project's kind (rust-docker) is Debian 12 with these among its packages;
# nothing else that the build reads may be assumed. The rest comes from hack/install-deps.sh.
base=build-essential,ca-certificates,curl,git,procps,python3,python3-pip

step "debootstrap: minimal Debian 12 (bookworm) + $base, from $mirror into $root"
if ! debootstrap --variant=minbase --include="$base" bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1; then
  tail -n 30 "$root.debootstrap.log" >&2
  rm -f "$root.debootstrap.log"
  echo "error: debootstrap failed" >&2
  exit 1
fi
rm -f "$root.debootstrap.log"
took

step "mounting /proc, /dev, the toolchain (read-only); copying the site's CA certificates and the repository"
mount_into proc /proc -t proc
mount_into /dev /dev --rbind
mount --make-rslave "$root/dev"
mount_into tmpfs /tmp -t tmpfs
mount_ro "$sysroot" /opt/rust
mount_ro "$nextest" /opt/tools/cargo-nextest
cp /etc/resolv.conf "$root/etc/resolv.conf"
# debootstrap writes no /etc/hosts; every installed Debian has one naming localhost, and
# chromedriver reaches the browser it starts at "localhost" (without it: "unable to connect to
# renderer"). Write what the installer writes.
if [ ! -e "$root/etc/hosts" ]; then
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
fi
# The site's own certificate authorities (an HTTPS proxy's, say) belong to the machine, not to
# the project: a fresh machine here has them in its trust store.
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
mkdir -p "$root/src/stratus"
# The working tree as git sees it (tracked and untracked files, nothing ignored): what a clone of
# this commit would have, plus uncommitted changes under test.
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | (cd "$repo" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$root/src/stratus"
echo "toolchain: $("$sysroot/bin/rustc" --version) (read-only at /opt/rust)"
echo "test runner: $("$nextest" --version 2>/dev/null | head -n 1) (read-only)"
echo "repository: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD || echo ' with uncommitted changes')"
took

inside() { # runs a command in the root, as root, with a clean environment
  chroot "$root" /usr/bin/env -i \
    HOME=/root USER=root LANG=C.UTF-8 TERM=dumb CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 \
    PATH=/opt/rust/bin:/opt/tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/root/.cargo \
    /bin/bash -c "cd /src/stratus && $1"
}

step "inside: hack/install-deps.sh"
inside "hack/install-deps.sh"
took

step "inside: cargo build --workspace --bins --tests --locked"
inside "cargo build --workspace --bins --tests --locked"
took

if [ "${FRESH_BUILD_ONLY:-}" = 1 ]; then
  exit 0
fi

# No Docker engine inside: the e2e package and the agent's Docker tests are left out.
step "inside: the tests that need no Docker engine"
inside "cargo nextest run --workspace --locked --no-fail-fast -E 'not (package(stratus-e2e) or binary_id(stratus-agent::docker))'"
took
