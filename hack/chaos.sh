#!/usr/bin/env bash
# Loses parts of the local cluster (hack/cluster.sh) under load, and checks that nothing is lost:
#
#   hack/chaos.sh [--fast] [--report FILE] [SCENARIO...]
#
# Scenarios (all of them, in this order, unless named; --fast: all but the rolling restart;
# hack/test.sh, and so CI, runs them all):
#   kill-node        kill -9 a node holding an instance (its agent and, as a machine's loss
#                    would, its workloads): its instances are replaced on the other nodes and
#                    the service answers throughout; prints the time to recovery
#   kill-leader      kill -9 the controller manager that leads, under load: the standby takes
#                    over within the lease, no instance is added twice, none is lost
#   kill-apiserver   kill -9 an API server under writes and load: clients go to the other one;
#                    every acknowledged write is there
#   stop-etcd        stop an etcd member: writes go on; started again, it catches up
#   partition        disconnect a node from the network: it goes NotReady and its instances
#                    are replaced; reconnected, its stale containers stop and nothing runs twice
#   rolling-restart  restart every component one at a time under load: no request fails
#
# The load is `stratus bench` at 40 requests/s to the service chaos (two instances at least,
# made here) through a gateway the scenario leaves alone. Each scenario fails (exit 1) when
# what it checks does not hold; the numbers go to stdout and, with --report, as JSON lines to
# FILE. The cluster must be up with three nodes or more (hack/cluster.sh up --nodes 3), and the
# CLI's current context pointing at it (cluster.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."

stratus="${STRATUS_BIN:-$PWD/target/debug/stratus}"
subnet="${STRATUS_CLUSTER_SUBNET:-172.31.250.0/24}"
prefix="${subnet%.*}"
host_ip="$prefix.1"
network=stratus-cluster
# Where hack/cluster.sh keeps the cluster's state (its CA among it).
cluster_dir="${STRATUS_CLUSTER_DIR:-$HOME/.stratus/cluster}"
service=chaos
ns=default
rate=40
# How long a scenario waits for what it expects before it fails.
patience="${STRATUS_CHAOS_WAIT:-180}"
work="$(mktemp -d)"
report=""
# On any exit: the load and every helper loop end with the script.
trap 'stop_load 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

all=(kill-node kill-leader kill-apiserver stop-etcd partition rolling-restart)
fast=(kill-node kill-leader kill-apiserver stop-etcd partition)

say() { echo "chaos: $*"; }
fail() {
  echo "chaos: FAILED: $*" >&2
  exit 1
}
cli() { "$stratus" "$@"; }

# record SCENARIO KEY=VALUE...: the scenario's numbers, printed and kept for --report.
record() {
  local scenario="$1"
  shift
  say "$scenario: $*"
  if [ -n "$report" ]; then
    python3 - "$scenario" "$@" >>"$report" <<'EOF'
import json, sys
fields = {"scenario": sys.argv[1]}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        fields[k] = float(v) if "." in v else int(v)
    except ValueError:
        fields[k] = v
print(json.dumps(fields))
EOF
  fi
}

# until_true WHAT COMMAND...: COMMAND every 200 ms until it succeeds, for at most $patience s.
until_true() {
  local what="$1"
  shift
  local deadline=$((SECONDS + patience))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${patience}s waiting for $what"
    sleep 0.2
  done
}

now_ms() { date +%s%3N; }

# The service's instances as "NAME PHASE READY NODE" lines.
instances() {
  cli get instances -n "$ns" -l "stratus.dev/service=$service" -o json | python3 -c '
import json, sys
for i in json.load(sys.stdin).get("items", []):
    s = i.get("status") or {}
    if (i.get("metadata") or {}).get("deletionTimestamp"):
        continue
    print(i["metadata"]["name"], s.get("phase", "") or "-", "ready" if s.get("ready") else "-",
          (i.get("spec") or {}).get("nodeName", "") or "-")'
}

# ready_count [EXCEPT_NODE]: ready instances of the service, not counting those on EXCEPT_NODE.
ready_count() {
  instances | awk -v except="${1:-}" '$2 == "Running" && $3 == "ready" && $4 != except' | wc -l
}

ready_at_least() { [ "$(ready_count "${2:-}")" -ge "$1" ]; }

# Containers of the service running on the engine (any node).
running_containers() {
  docker ps -q --filter "label=stratus.dev/service=$service" --filter "label=stratus.dev/namespace=$ns" | wc -l
}

node_ready() {
  cli get node "$1" -o json | python3 -c '
import json, sys
n = json.load(sys.stdin)
c = [c for c in (n.get("status") or {}).get("conditions", []) if c.get("type") == "Ready"]
print(c[0].get("status") if c else "Unknown")'
}
node_is() { [ "$(node_ready "$1")" = "$2" ]; }

service_gone() { ! cli get service "$service" -n "$ns" >/dev/null 2>&1; }

# Makes the service anew (one left by an earlier run may have failed).
deploy() {
  if ! service_gone; then
    cli delete service "$service" -n "$ns" >/dev/null
    until_true "the $service of an earlier run to go" service_gone
  fi
  cli apply -f - >/dev/null <<EOF
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: $service
  namespace: $ns
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "2"
        autoscaling.knative.dev/max-scale: "4"
    spec:
      containers:
        - image: 127.0.0.1:5000/hello:v1
          resources:
            limits: { cpu: 100m, memory: 32Mi }
EOF
  until_true "two ready instances of $service" ready_at_least 2
  until_true "$service to answer" curl -fsS --max-time 2 -H "Host: $service.$ns.localhost" "http://127.0.0.1:9080/"
}

# start_load [PORT]: load through gateway-1 (published on 127.0.0.1:9080) or the gateway
# published on PORT (gateway-2: 9081).
load_pid=""
start_load() {
  local url="http://$service.$ns.localhost:${1:-9080}/"
  "$stratus" bench "$url" -r "$rate" -d 1h --timeout 10s >"$work/load.out" 2>"$work/load.err" &
  load_pid=$!
  sleep 1
  kill -0 "$load_pid" 2>/dev/null || fail "the load did not start: $(cat "$work/load.err")"
}

# stop_load: stops the load; sets sent, succeeded, errors.
stop_load() {
  [ -n "$load_pid" ] || return 0
  kill -INT "$load_pid" 2>/dev/null || true
  wait "$load_pid" || true
  load_pid=""
  sent="$(sed -n 's/^Requests *\([0-9]*\) sent.*/\1/p' "$work/load.out")"
  succeeded="$(sed -n 's/^Requests .* \([0-9]*\) succeeded.*/\1/p' "$work/load.out")"
  errors="$(awk '/^ERRORS/ {getline; print $1}' "$work/load.out")"
  # By class, e.g. "connect=0 timeout=0 4xx=0 429=0 5xx=3 other=0 dropped=0".
  error_classes="$(awk '/^ERRORS/ {for (i = 2; i <= NF; i++) h[i] = tolower($i); getline; o = "";
    for (i = 3; i <= NF; i++) o = o (o ? " " : "") h[i - 1] "=" $i; print o}' "$work/load.out")"
  if [ "$errors" != 0 ]; then
    say "the load's errors by class: $error_classes"
    grep -E '^ +[0-9]+s .*errors [1-9]' "$work/load.err" | head -3 | sed 's/^/chaos:   first seconds with errors: /' || true
  fi
  [ -n "$sent" ] && [ -n "$errors" ] || fail "cannot read the load's report: $(cat "$work/load.out" "$work/load.err")"
}

# A node holding an instance of the service.
node_with_instance() {
  instances | awk '$2 == "Running" && $4 != "-" {print $4; exit}'
}

kill_node_workloads() {
  local ids
  ids="$(docker ps -q --filter "label=stratus.dev/node=$1")"
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker kill $ids >/dev/null
}

scenario_kill-node() {
  local node
  node="$(node_with_instance)"
  [ -n "$node" ] || fail "no instance of $service runs on a node"
  start_load
  sleep 2
  local t0
  t0="$(now_ms)"
  docker kill -s KILL "$node" >/dev/null
  kill_node_workloads "$node"
  until_true "$node to be NotReady" node_is "$node" False
  local not_ready=$(($(now_ms) - t0))
  until_true "two ready instances on the other nodes" ready_at_least 2 "$node"
  local recovered=$(($(now_ms) - t0))
  sleep 2
  stop_load
  record kill-node node="$node" not_ready_ms="$not_ready" recovery_ms="$recovered" \
    requests="$sent" failed="$errors"
  [ "$errors" = 0 ] || fail "kill-node: $errors of $sent requests failed"
  docker start "$node" >/dev/null
  until_true "$node to be Ready again" node_is "$node" True
}

leader() {
  local c
  local metrics
  for c in 1 2; do
    # Read whole before grep: `curl | grep -q` fails under pipefail when grep stops early and
    # curl, still writing, gets SIGPIPE (the metrics outgrew the pipe's buffer).
    metrics="$(curl -fsS --max-time 2 "http://$host_ip:$((7074 + c))/metrics" 2>/dev/null)" || continue
    if grep -Eq '^stratus_controllers_leader(\{[^}]*\})? 1$' <<<"$metrics"; then
      echo "stratus-controllers-$c"
      return
    fi
  done
  return 1
}
leader_is_not() {
  local l
  l="$(leader)" && [ "$l" != "$1" ]
}

scenario_kill-leader() {
  local old
  old="$(leader)" || fail "no controller manager leads"
  local before
  before="$(ready_count)"
  start_load
  sleep 2
  : >"$work/counts"
  (while true; do
    instances | awk '$2 != "Failed" && $2 != "Succeeded"' | wc -l >>"$work/counts"
    sleep 0.5
  done) &
  local sampler=$!
  local t0
  t0="$(now_ms)"
  docker kill -s KILL "$old" >/dev/null
  until_true "another controller manager to lead" leader_is_not "$old"
  local failover=$(($(now_ms) - t0))
  # Let the new leader run its controllers and the autoscaler for a few of its ticks.
  sleep 10
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  stop_load
  local fewest most
  fewest="$(sort -n "$work/counts" | head -1)"
  most="$(sort -n "$work/counts" | tail -1)"
  record kill-leader old="$old" failover_ms="$failover" instances_before="$before" \
    fewest="$fewest" most="$most" requests="$sent" failed="$errors"
  [ "$fewest" -ge "$before" ] || fail "kill-leader: the service went down to $fewest instances (from $before)"
  [ "$most" -le 4 ] || fail "kill-leader: $most instances at once (max-scale 4): some were made twice"
  [ "$errors" = 0 ] || fail "kill-leader: $errors of $sent requests failed"
  docker start "$old" >/dev/null
}

acked_at_least() { [ "$(wc -l <"$work/acked")" -ge "$1" ]; }

scenario_kill-apiserver() {
  start_load
  # Writes, one after the other, until told to stop; each acknowledged one is kept.
  : >"$work/acked"
  (
    i=0
    while [ ! -e "$work/stop-writes" ]; do
      i=$((i + 1))
      name="chaos-$i"
      if cli create secret generic "$name" -n "$ns" --from-literal "n=$i" >/dev/null 2>>"$work/writes.err"; then
        echo "$name" >>"$work/acked"
      fi
    done
  ) &
  local writer=$!
  until_true "some writes" acked_at_least 5
  local t0
  t0="$(now_ms)"
  docker kill -s KILL stratus-apiserver-1 >/dev/null
  local n
  n="$(wc -l <"$work/acked")"
  until_true "writes after the loss" acked_at_least $((n + 10))
  local first_after=$(($(now_ms) - t0))
  touch "$work/stop-writes"
  wait "$writer" || true
  stop_load
  local acked stored lost
  acked="$(wc -l <"$work/acked")"
  cli get secrets -n "$ns" -o name | sed 's|.*/||' | sort >"$work/stored"
  lost="$(sort "$work/acked" | comm -23 - "$work/stored" | wc -l)"
  record kill-apiserver writes_acknowledged="$acked" lost="$lost" \
    ten_writes_after_loss_ms="$first_after" requests="$sent" failed="$errors"
  [ "$lost" = 0 ] || fail "kill-apiserver: $lost acknowledged writes are not stored"
  [ "$errors" = 0 ] || fail "kill-apiserver: $errors of $sent requests failed"
  # Clean up the writes, and bring the server back.
  sed 's|^|secret/|' "$work/acked" | xargs -r -n 50 "$stratus" delete -n "$ns" >/dev/null
  rm -f "$work/stop-writes"
  docker start stratus-apiserver-1 >/dev/null
  until_true "apiserver-1 to answer" curl -fsS --max-time 2 --cacert "$cluster_dir/ca.crt" \
    "https://$prefix.11:7070/healthz"
}

etcd_revision() {
  curl -fsS --max-time 2 -X POST "http://$1:2379/v3/maintenance/status" -d '{}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'
}
# Whether member IP has every write up to revision REV (the one the others had after the
# writes made while it was down).
caught_up() {
  local r
  r="$(etcd_revision "$1")" && [ "$r" -ge "$2" ]
}

scenario_stop-etcd() {
  local member=stratus-etcd-3 ip="$prefix.4"
  start_load
  docker stop "$member" >/dev/null
  local i
  for i in $(seq 1 20); do
    cli create secret generic "etcd-chaos-$i" -n "$ns" --from-literal "n=$i" >/dev/null ||
      fail "stop-etcd: a write failed with one etcd member down"
  done
  local rev
  rev="$(etcd_revision "$prefix.2")"
  local t0
  t0="$(now_ms)"
  docker start "$member" >/dev/null
  until_true "$member to catch up to revision $rev" caught_up "$ip" "$rev"
  local caught_up=$(($(now_ms) - t0))
  stop_load
  record stop-etcd writes_while_down=20 catch_up_ms="$caught_up" revision="$rev" requests="$sent" failed="$errors"
  [ "$errors" = 0 ] || fail "stop-etcd: $errors of $sent requests failed"
  seq 1 20 | sed 's|^|secret/etcd-chaos-|' | xargs -r "$stratus" delete -n "$ns" >/dev/null
}

no_stale_containers() {
  [ "$(docker ps -q --filter "label=stratus.dev/node=$1" --filter "label=stratus.dev/service=$service" | wc -l)" -le \
    "$(instances | awk -v n="$1" '$4 == n && $2 == "Running"' | wc -l)" ]
}
runs_once() {
  [ "$(running_containers)" -eq "$(instances | awk '$2 == "Running"' | wc -l)" ]
}

scenario_partition() {
  local node ip
  node="$(node_with_instance)"
  [ -n "$node" ] || fail "no instance of $service runs on a node"
  ip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$node")"
  start_load
  local t0
  t0="$(now_ms)"
  docker network disconnect "$network" "$node"
  until_true "$node to be NotReady" node_is "$node" False
  local not_ready=$(($(now_ms) - t0))
  until_true "two ready instances on the other nodes" ready_at_least 2 "$node"
  local replaced=$(($(now_ms) - t0))
  docker network connect --ip "$ip" "$network" "$node"
  local t1
  t1="$(now_ms)"
  until_true "$node to be Ready again" node_is "$node" True
  until_true "$node's stale containers to stop" no_stale_containers "$node"
  local cleaned=$(($(now_ms) - t1))
  until_true "each instance to run in one container" runs_once
  stop_load
  record partition node="$node" not_ready_ms="$not_ready" replaced_ms="$replaced" \
    stale_stopped_after_reconnect_ms="$cleaned" requests="$sent" failed="$errors"
  [ "$errors" = 0 ] || fail "partition: $errors of $sent requests failed"
}

restart_and_wait() {
  local name="$1"
  docker restart -t 10 "$name" >/dev/null
  case "$name" in
    stratus-etcd-*) until_true "$name" curl -fsS --max-time 2 "http://$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$name"):2379/health" ;;
    stratus-apiserver-*) until_true "$name" curl -fsS --max-time 2 --cacert "$cluster_dir/ca.crt" "https://$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$name"):7070/healthz" ;;
    stratus-node-*) until_true "$name" node_is "$name" True ;;
    # The controller managers serve /healthz on the host's network (.1:7075, .1:7076), the
    # gateways /readyz on their admin port (ready: routes and endpoints loaded).
    stratus-controllers-*) until_true "$name" curl -fsS --max-time 2 "http://$host_ip:$((7074 + ${name##*-}))/healthz" ;;
    stratus-gateway-*) until_true "$name" curl -fsS --max-time 2 "http://$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$name"):8081/readyz" ;;
    *) fail "restart_and_wait: no readiness check for $name" ;;
  esac
}

# Every part but gateway-1 restarts while the load goes through gateway-1; then gateway-1
# restarts while it goes through gateway-2 (a load balancer in front would do that switch).
scenario_rolling-restart() {
  local parts=()
  mapfile -t parts < <(docker ps --filter label=io.stratus.cluster --format '{{.Names}}' | grep -v gateway-1 | sort)
  start_load
  local p t0
  t0="$(now_ms)"
  for p in "${parts[@]}"; do
    restart_and_wait "$p"
  done
  stop_load
  local sent_1="$sent" errors_1="$errors"
  start_load 9081
  restart_and_wait stratus-gateway-1
  until_true "gateway-1 to answer" curl -fsS --max-time 2 -H "Host: $service.$ns.localhost" "http://127.0.0.1:9080/"
  stop_load
  sent=$((sent + sent_1)) errors=$((errors + errors_1))
  parts+=(stratus-gateway-1)
  local took=$(($(now_ms) - t0))
  local rate_pct
  rate_pct="$(python3 -c "print(f'{100 * $errors / max($sent, 1):.3f}')")"
  record rolling-restart components="${#parts[@]}" took_ms="$took" requests="$sent" failed="$errors" \
    error_rate_percent="$rate_pct"
  [ "$errors" = 0 ] || fail "rolling-restart: $errors of $sent requests failed"
}

main() {
  local chosen=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --fast) chosen=("${fast[@]}") ;;
      --report)
        report="$2"
        shift
        ;;
      -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
      kill-node | kill-leader | kill-apiserver | stop-etcd | partition | rolling-restart) chosen+=("$1") ;;
      *) fail "unknown argument $1 (hack/chaos.sh --help lists the scenarios)" ;;
    esac
    shift
  done
  [ ${#chosen[@]} -gt 0 ] || chosen=("${all[@]}")
  [ -z "$report" ] || : >"$report"
  docker ps -a --filter label=io.stratus.cluster --format '{{.Names}}' | grep -q '^stratus-node-3$' ||
    fail "no cluster with three nodes is up (hack/cluster.sh up --nodes 3)"
  deploy
  local s
  for s in "${chosen[@]}"; do
    say "--- $s"
    "scenario_$s"
    until_true "two ready instances of $service" ready_at_least 2
  done
  cli delete service "$service" -n "$ns" >/dev/null
  say "all passed: ${chosen[*]}"
}

main "$@"
