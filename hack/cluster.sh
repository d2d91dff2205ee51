#!/usr/bin/env bash
# A Stratus cluster on this machine, in Docker containers (as kind makes Kubernetes ones):
#
#   hack/cluster.sh up [--nodes N]   make it (N nodes, default 3) and point the CLI at it
#   hack/cluster.sh down             remove it: its containers, its workloads, its network,
#                                    its data and the CLI's context
#   hack/cluster.sh status           what runs, and the nodes as the API sees them
#   hack/cluster.sh prometheus       (re)writes a Prometheus configuration scraping every
#                                    component (file-based discovery; `up` writes it too)
#
# On the private network stratus-cluster (STRATUS_CLUSTER_SUBNET, default 172.31.250.0/24):
#   stratus-etcd-{1,2,3}          .2-.4    a three-member etcd
#   stratus-apiserver-{1,2}       .11-.12  two API servers sharing the cluster CA
#   stratus-gateway-{1,2}         .31-.32  two gateways, published on 127.0.0.1:9080 and 9081
#   stratus-node-{1..N}           .101-    a node agent each, with its own name and address
# and two leader-elected controller managers, stratus-controllers-{1,2}, on the host's network
# (they resolve image digests at the local registry, 127.0.0.1:5000, which only the host
# reaches); their autoscaler services listen on the network's host address (.1), ports 7073
# and 7074, where the gateways report demand.
#
# The nodes' agents drive this machine's Docker engine (its socket is mounted): their
# instances are containers beside the cluster's, labelled with the node's name, and publish
# their ports on the host's address in the network (.1), which the gateways reach.
# docs/operations.md ("A local cluster") says why, and what it costs.
#
# The images come from `hack/images.sh --platform` (built here FROM scratch, pushed to the
# local registry). State (etcd's data, the CA, tokens, the admin's password) lives in
# STRATUS_CLUSTER_DIR (default ~/.stratus/cluster). The CLI gets a context named
# stratus-cluster, made current, logged in as admin.
set -euo pipefail
cd "$(dirname "$0")/.."

network=stratus-cluster
subnet="${STRATUS_CLUSTER_SUBNET:-172.31.250.0/24}"
prefix="${subnet%.*}"
host_ip="$prefix.1"
dir="${STRATUS_CLUSTER_DIR:-$HOME/.stratus/cluster}"
registry=127.0.0.1:5000
tag=dev
http_port="${STRATUS_CLUSTER_HTTP_PORT:-9080}"
label=io.stratus.cluster
# The instance label the agents put on containers (stratus_api::wellknown::labels::NODE).
node_label=stratus.dev/node
context=stratus-cluster
stratus="${STRATUS_BIN:-$PWD/target/debug/stratus}"
wait_seconds="${STRATUS_CLUSTER_WAIT:-120}"

apiservers="https://$prefix.11:7070,https://$prefix.12:7070"
etcd_endpoints="http://$prefix.2:2379,http://$prefix.3:2379,http://$prefix.4:2379"
autoscalers="http://$host_ip:7073,http://$host_ip:7074"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

say() { echo "cluster: $*"; }
die() {
  echo "error: $*" >&2
  exit 1
}

# run NAME IP IMAGE [docker run options...] -- [args...]: a component's container on the
# cluster's network at IP (or on the host's network when IP is "host").
run() {
  local name="$1" ip="$2" image="$3"
  shift 3
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    opts+=("$1")
    shift
  done
  [ $# -gt 0 ] && shift
  local net=(--network "$network" --ip "$ip" --hostname "$name")
  [ "$ip" = host ] && net=(--network host)
  docker run -d --name "$name" --label "$label=$name" "${net[@]}" --restart no \
    --log-opt max-size=10m --log-opt max-file=3 \
    "${opts[@]}" "$registry/$image:$tag" "$@" >/dev/null
}

# wait_for WHAT COMMAND...: runs COMMAND every half second until it succeeds, for at most
# $wait_seconds, printing WHAT while it waits.
wait_for() {
  local what="$1"
  shift
  local deadline=$((SECONDS + wait_seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: timed out after ${wait_seconds}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
  say "$what: ok"
}

healthy() {
  curl -fsS --max-time 2 --cacert "$dir/ca.crt" "https://$1:7070/healthz"
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://$1:2379/health" | grep -q '"health":"true"'
}

cli() {
  "$stratus" "$@"
}

ready_nodes() {
  cli get nodes -o json |
    python3 -c 'import json,sys
items = json.load(sys.stdin).get("items", [])
ready = [n for n in items if any(c.get("type") == "Ready" and c.get("status") == "True"
         for c in (n.get("status") or {}).get("conditions", []))]
print(len(ready))'
}

show_logs_of() {
  echo "--- last lines of $1:" >&2
  docker logs --tail 30 "$1" >&2 2>&1 || true
}

up() {
  local nodes=3
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes)
        [ $# -ge 2 ] || die "--nodes needs a number"
        nodes="$2"
        shift 2
        ;;
      --nodes=*)
        nodes="${1#--nodes=}"
        shift
        ;;
      *) die "unknown argument to up: $1 (usage: hack/cluster.sh up [--nodes N])" ;;
    esac
  done
  [[ "$nodes" =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] && [ "$nodes" -le 100 ] ||
    die "--nodes must be a whole number from 1 to 100, not ${nodes@Q}"
  if docker ps -aq --filter "label=$label" | grep -q .; then
    die "a cluster is already up (hack/cluster.sh status shows it; hack/cluster.sh down removes it)"
  fi

  hack/install-deps.sh
  hack/images.sh --platform
  cargo build --quiet -p stratus-cli --bin stratus

  mkdir -p "$dir"
  chmod 0700 "$dir"
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    docker network create --subnet "$subnet" --label "$label=network" "$network" >/dev/null
    say "network $network ($subnet)"
  fi

  # etcd: three members, one cluster.
  local i members=""
  for i in 1 2 3; do
    members+="${members:+,}etcd-$i=http://$prefix.$((i + 1)):2380"
  done
  for i in 1 2 3; do
    local ip="$prefix.$((i + 1))"
    mkdir -p "$dir/etcd-$i"
    run "stratus-etcd-$i" "$ip" stratus-etcd -v "$dir/etcd-$i:/data" -- \
      --name "etcd-$i" --data-dir /data/member \
      --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$ip:2379" \
      --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls "http://$ip:2380" \
      --initial-cluster "$members" --initial-cluster-state new --initial-cluster-token "$network"
  done
  for i in 1 2 3; do
    wait_for "etcd-$i" etcd_healthy "$prefix.$((i + 1))" || {
      show_logs_of "stratus-etcd-$i"
      exit 1
    }
  done

  # API servers: the first makes the CA, the admin and the encryption key's users; the second
  # gets the same CA and key before its first start.
  local a
  for a in 1 2; do mkdir -p "$dir/apiserver-$a/pki"; done
  if [ ! -f "$dir/encryption-key" ]; then
    docker run --rm -v "$dir:/cluster" "$registry/stratus-apiserver:$tag" \
      rotate-encryption-key --encryption-key-file /cluster/encryption-key >/dev/null
  fi
  for a in 1 2; do
    if [ "$a" = 2 ]; then
      cp -p "$dir/apiserver-1/pki/ca.crt" "$dir/apiserver-1/pki/ca.key" "$dir/apiserver-2/pki/"
    fi
    local ip="$prefix.$((a + 10))"
    run "stratus-apiserver-$a" "$ip" stratus-apiserver \
      -v "$dir/apiserver-$a:/data" -v "$dir/encryption-key:/etc/stratus/encryption-key:ro" -- \
      --listen 0.0.0.0:7070 --store etcd --etcd-endpoints "$etcd_endpoints" --data-dir /data \
      --encryption-key-file /etc/stratus/encryption-key --bootstrap-admin /data/admin-password \
      --tls-san "$ip" --tls-san "stratus-apiserver-$a"
    if [ "$a" = 1 ]; then
      wait_for "the cluster CA" test -s "$dir/apiserver-1/pki/ca.crt" || {
        show_logs_of stratus-apiserver-1
        exit 1
      }
      cp "$dir/apiserver-1/pki/ca.crt" "$dir/ca.crt"
    fi
    wait_for "apiserver-$a" healthy "$ip" || {
      show_logs_of "stratus-apiserver-$a"
      exit 1
    }
  done

  # The CLI: a context for both API servers, logged in as admin. The context that was current
  # is made current again by `down`.
  cli config current-context >"$dir/previous-context" 2>/dev/null || true
  cli config set-context "$context" --server "$apiservers" >/dev/null
  cli config use-context "$context" >/dev/null
  wait_for "the admin's password" test -s "$dir/apiserver-1/admin-password"
  cli login --certificate-authority "$dir/ca.crt" -u admin --password-stdin \
    <"$dir/apiserver-1/admin-password" >/dev/null
  say "the CLI's context $context is current, logged in as admin"

  # Service accounts and their tokens.
  cli create serviceaccount controllers -n stratus-system --cluster-role system:controllers >/dev/null
  cli create serviceaccount gateway -n stratus-system --cluster-role system:gateway >/dev/null
  (
    umask 077
    cli create token serviceaccount/controllers -n stratus-system --duration 720h >"$dir/controllers.token"
    cli create token serviceaccount/gateway -n stratus-system --duration 720h >"$dir/gateway.token"
  )

  # Controller managers: two replicas, one leads.
  local c
  for c in 1 2; do
    run "stratus-controllers-$c" host stratus-controllers \
      -v "$dir/ca.crt:/etc/stratus/ca.crt:ro" -v "$dir/controllers.token:/etc/stratus/token:ro" -- \
      --apiserver "$apiservers" --certificate-authority /etc/stratus/ca.crt \
      --token-file /etc/stratus/token --identity "controllers-$c" \
      --gateway-port "$http_port" \
      --autoscaler-listen "$host_ip:$((7072 + c))" \
      --metrics-listen "$host_ip:$((7074 + c))"
  done

  # Gateways.
  local g
  for g in 1 2; do
    local ip="$prefix.$((g + 30))" publish=()
    publish=(-p "127.0.0.1:$((http_port + g - 1)):8080")
    mkdir -p "$dir/gateway-$g"
    run "stratus-gateway-$g" "$ip" stratus-gateway "${publish[@]}" \
      -v "$dir/ca.crt:/etc/stratus/ca.crt:ro" -v "$dir/gateway.token:/etc/stratus/token:ro" \
      -v "$dir/gateway-$g:/data" -- \
      --apiserver "$apiservers" --certificate-authority /etc/stratus/ca.crt \
      --token-file /etc/stratus/token --name "gateway-$g" \
      --listen 0.0.0.0:8080 --admin-listen 0.0.0.0:8081 \
      --autoscaler "$autoscalers" --usage-dir /data/usage
  done

  # Nodes: each joins with a bootstrap token (one use each) and the CA's pin.
  local join pin token
  join="$(cli create token --bootstrap --ttl 1h --uses "$nodes" --print-join-command)"
  pin="$(grep -o 'sha256:[0-9a-f]*' <<<"$join" | head -1)"
  token="$(grep -o -- '--token [^ ]*' <<<"$join" | head -1 | cut -d' ' -f2)"
  [ -n "$pin" ] && [ -n "$token" ] || die "cannot read the join command: $join"
  local n
  for n in $(seq 1 "$nodes"); do
    add_node "$n" "$token" "$pin"
  done

  wait_for "$nodes nodes Ready" node_count_is "$nodes" || {
    cli get nodes >&2 || true
    exit 1
  }
  cli get nodes
  write_prometheus
  echo
  say "up. Next:"
  echo "  $stratus apply -f manifests/hello.yaml"
  echo "  curl http://hello.default.localhost:$http_port/"
  echo "  hack/cluster.sh down"
}

# write_prometheus: manifests/observability/prometheus-cluster.yml with the cluster's CA and
# its targets (file-based discovery, one file per component) in $dir/prometheus. Run again
# after adding nodes; Prometheus rereads the target files by itself.
write_prometheus() {
  local out="$dir/prometheus"
  [ -s "$dir/ca.crt" ] || die "no cluster is up (no $dir/ca.crt)"
  mkdir -p "$out/targets"
  cp manifests/observability/prometheus-cluster.yml "$out/prometheus.yml"
  cp "$dir/ca.crt" "$out/ca.crt"
  if ! cli get serviceaccount prometheus -n stratus-system >/dev/null 2>&1; then
    cli create serviceaccount prometheus -n stratus-system >/dev/null
  fi
  (
    umask 077
    cli create token serviceaccount/prometheus -n stratus-system --duration 720h >"$out/apiserver.token"
  )
  write_targets "$out/targets/stratus-apiserver.json" "$prefix.11:7070" "$prefix.12:7070"
  write_targets "$out/targets/stratus-controllers.json" "$host_ip:7075" "$host_ip:7076"
  write_targets "$out/targets/stratus-gateway.json" "$prefix.31:8081" "$prefix.32:8081"
  local nodes=() name
  for name in $(docker ps --filter "label=$label" --format '{{.Names}}' | grep '^stratus-node-' | sort -V); do
    nodes+=("$prefix.$((${name#stratus-node-} + 100)):7071")
  done
  write_targets "$out/targets/stratus-agent.json" "${nodes[@]}"
  say "Prometheus scrapes it all with: prometheus --config.file=$out/prometheus.yml"
}

# write_targets FILE ADDR...: a file_sd target list, replaced whole (Prometheus may read it
# at any moment).
write_targets() {
  local file="$1" list="" a
  shift
  for a in "$@"; do list+="${list:+, }\"$a\""; done
  printf '[{"targets": [%s], "labels": {"cluster": "%s"}}]\n' "$list" "$network" >"$file.tmp"
  mv "$file.tmp" "$file"
}

node_count_is() {
  [ "$(ready_nodes)" = "$1" ]
}

# add_node N TOKEN PIN: starts node N's agent.
add_node() {
  local n="$1" token="$2" pin="$3"
  local name="stratus-node-$n" ip="$prefix.$((n + 100))"
  mkdir -p "$dir/node-$n"
  run "$name" "$ip" stratus-agent \
    -v /var/run/docker.sock:/var/run/docker.sock -v "$dir/node-$n:/data" -- \
    --apiserver "$apiservers" --join "https://$prefix.11:7070" --token "$token" --ca-cert-hash "$pin" \
    --node-name "$name" --data-dir /data --advertise-address "$ip" --listen 0.0.0.0:7071 \
    --publish-address "$host_ip"
}

down() {
  local containers
  containers="$(docker ps -aq --filter "label=$label")"
  # The nodes' workloads: containers any of the cluster's nodes made.
  local node workloads=""
  for node in $(docker ps -a --filter "label=$label" --format '{{.Names}}' | grep '^stratus-node-' || true); do
    workloads+=" $(docker ps -aq --filter "label=$node_label=$node" | tr '\n' ' ')"
  done
  if [ -n "$containers" ]; then
    # shellcheck disable=SC2086
    docker rm -f $containers >/dev/null
  fi
  if [ -n "${workloads// /}" ]; then
    # shellcheck disable=SC2086
    docker rm -f $workloads >/dev/null
  fi
  # Workloads of nodes whose agent container is already gone.
  local left
  left="$(docker ps -a --filter "label=$node_label" --format '{{.ID}} {{.Label "'"$node_label"'"}}' |
    awk '$2 ~ /^stratus-node-[0-9]+$/ {print $1}')"
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    docker rm -f $left >/dev/null
  fi
  if docker network inspect "$network" >/dev/null 2>&1; then
    docker network rm "$network" >/dev/null
  fi
  if [ -x "$stratus" ]; then
    cli config delete-context "$context" >/dev/null 2>&1 || true
    local previous
    previous="$(cat "$dir/previous-context" 2>/dev/null || true)"
    if [ -n "$previous" ] && [ "$previous" != "$context" ]; then
      cli config use-context "$previous" >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$dir"
  say "down"
}

status() {
  docker ps -a --filter "label=$label" --format 'table {{.Names}}\t{{.Status}}'
  if docker ps -q --filter "label=$label" | grep -q .; then
    echo
    cli get nodes || true
  fi
}

case "${1:-}" in
  up)
    shift
    up "$@"
    ;;
  down) down ;;
  status) status ;;
  prometheus) write_prometheus ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
