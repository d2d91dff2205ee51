#!/usr/bin/env bash
# Builds the example workload image and publishes it to the local registry:
#
#   1. makes sure a registry answers on 127.0.0.1:5000, installing Debian's `docker-registry`
#      and starting it in the background when nothing does (it keeps running after this script,
#      with its data in ${STRATUS_REGISTRY_DIR:-$HOME/.stratus/registry});
#   2. builds examples/hello as a static binary (its own target dir, target/images, so that the
#      workspace's debug build is not disturbed);
#   3. builds the image 127.0.0.1:5000/hello:v1 FROM scratch and pushes it.
#
# Idempotent: run it as often as you like; what is already there is reused. The manifests in
# manifests/ and the Docker tests of the node agent use this image.
#
# With --platform it also builds and pushes the images of Stratus itself, which
# hack/cluster.sh runs:
#   - 127.0.0.1:5000/stratus-{apiserver,controllers,gateway,agent}:dev, each FROM scratch
#     with its one static binary (profile `image`: optimised, no debug info; target dir
#     target/images);
#   - 127.0.0.1:5000/stratus-etcd:dev, FROM scratch with Debian's etcd and the two files of
#     glibc it links to (Debian builds etcd with cgo, so it is not static).
set -euo pipefail
cd "$(dirname "$0")/.."

registry=127.0.0.1:5000
image="$registry/hello:v1"
registry_dir="${STRATUS_REGISTRY_DIR:-$HOME/.stratus/registry}"
target=x86_64-unknown-linux-gnu

registry_answers() {
  curl -fs -o /dev/null --max-time 2 "http://$registry/v2/"
}

ensure_registry() {
  if registry_answers; then
    echo "registry: already answering on $registry"
    return
  fi
  if ! command -v docker-registry >/dev/null 2>&1; then
    echo "registry: installing docker-registry"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
  fi
  mkdir -p "$registry_dir/data"
  cat >"$registry_dir/config.yml" <<EOF
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $registry_dir/data }
  delete: { enabled: true }
http: { addr: $registry }
EOF
  # setsid + nohup: the registry must outlive this script and the terminal it ran in.
  setsid nohup docker-registry serve "$registry_dir/config.yml" \
    >>"$registry_dir/registry.log" 2>&1 </dev/null &
  echo $! >"$registry_dir/registry.pid"
  for _ in $(seq 1 100); do
    if registry_answers; then
      echo "registry: started on $registry (pid $(cat "$registry_dir/registry.pid"), data and log in $registry_dir)"
      return
    fi
    if ! kill -0 "$(cat "$registry_dir/registry.pid")" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "error: the registry did not answer on http://$registry/v2/; its log ($registry_dir/registry.log) ends with:" >&2
  tail -n 20 "$registry_dir/registry.log" >&2
  exit 1
}

build_binary() {
  echo "build: examples/hello, static, release"
  # +crt-static on the gnu target makes a static-pie binary: the image has no libc to link to.
  RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
    cargo build --quiet --release --locked -p hello --target "$target" --target-dir target/images
}

build_image() {
  local context
  context="$(mktemp -d)"
  trap 'rm -rf "$context"' RETURN
  # -p keeps the modification time, which the build cache compares: an unchanged binary then
  # gives the same image, and the push has nothing to send.
  cp -p "target/images/$target/release/hello" "$context/hello"
  cat >"$context/Dockerfile" <<'EOF'
FROM scratch
COPY hello /hello
EXPOSE 8080
ENTRYPOINT ["/hello"]
EOF
  local output
  # The legacy builder of an engine without buildx warns on every build; show the output only
  # when the build fails.
  if ! output="$(docker build --quiet -t "$image" "$context" 2>&1)"; then
    echo "$output" >&2
    echo "error: docker build of $image failed" >&2
    exit 1
  fi
  echo "image: built $image ($(docker image inspect --format '{{.Id}}' "$image"))"
}

push_image() {
  docker push --quiet "$image" >/dev/null
  echo "image: pushed $(docker image inspect --format '{{index .RepoDigests 0}}' "$image")"
}

platform=false
case "${1:-}" in
  --platform) platform=true ;;
  "") ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "error: unknown argument $1 (usage: hack/images.sh [--platform])" >&2
    exit 2
    ;;
esac

# The four binaries of the platform, static, in one cargo run (they share every dependency).
build_platform_binaries() {
  echo "build: stratus-{apiserver,controllers,gateway,agent}, static, profile image"
  RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
    cargo build --quiet --profile image --locked -p stratus-platform --bins --target "$target" --target-dir target/images
}

# build_scratch_image IMAGE ENTRYPOINT FILE... : an image FROM scratch holding FILEs, run as
# ENTRYPOINT. A FILE is a host path, copied to the same path in the image, or SRC=DEST.
build_scratch_image() {
  local name="$1" entrypoint="$2"
  shift 2
  local context
  context="$(mktemp -d)"
  local f src dest
  {
    echo "FROM scratch"
    for f in "$@"; do
      src="${f%%=*}" dest="${f#*=}"
      mkdir -p "$context/root$(dirname "$dest")"
      cp -pL "$src" "$context/root$dest"
    done
    echo "COPY root/ /"
    echo "ENTRYPOINT [\"$entrypoint\"]"
  } >"$context/Dockerfile"
  local output
  if ! output="$(docker build --quiet -t "$name" "$context" 2>&1)"; then
    rm -rf "$context"
    echo "$output" >&2
    echo "error: docker build of $name failed" >&2
    exit 1
  fi
  rm -rf "$context"
  docker push --quiet "$name" >/dev/null
  echo "image: pushed $(docker image inspect --format '{{index .RepoDigests 0}}' "$name")"
}

build_platform_images() {
  build_platform_binaries
  local bin
  for bin in apiserver controllers gateway agent; do
    build_scratch_image "$registry/stratus-$bin:dev" "/stratus-$bin" \
      "target/images/$target/image/stratus-$bin=/stratus-$bin"
  done
  # etcd: the binary and what `ldd` says it loads (libc and the dynamic loader).
  local etcd libs
  etcd="$(command -v etcd || true)"
  if [ -z "$etcd" ]; then
    echo "error: etcd is not installed (hack/install-deps.sh installs etcd-server)" >&2
    exit 1
  fi
  mapfile -t libs < <(ldd "$etcd" | grep -o '/[^ ]*' | sort -u)
  build_scratch_image "$registry/stratus-etcd:dev" /usr/bin/etcd "$etcd" "${libs[@]}"
}

for tool in curl docker cargo; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is needed and not installed" >&2
    exit 1
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "error: cannot reach the Docker engine (docker info failed); is dockerd running?" >&2
  exit 1
fi
ensure_registry
build_binary
build_image
push_image
if $platform; then
  build_platform_images
fi
