#!/usr/bin/env bash
# Checks the API server against its own OpenAPI document with Schemathesis (from PyPI): it
# generates requests from /openapi.json and reports every answer that breaks the document or
# HTTP (5xx, a valid request refused, an invalid one accepted, a 405 without `Allow`, …).
#
# Installs Schemathesis into a virtual environment of its own (target/schemathesis-venv, pinned
# version), starts `stratus-apiserver` (the debug build) on a temporary embedded store and a free
# loopback port, runs `st run --checks all` with a bounded number of examples, and stops the
# server. Exits non-zero on any failure Schemathesis reports.
#
#   hack/schemathesis.sh                 # 10 examples per operation (CI; about 4 minutes)
#   ST_MAX_EXAMPLES=100 hack/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/schemathesis-venv
examples="${ST_MAX_EXAMPLES:-10}"

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "schemathesis: installing $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --quiet -p stratus-platform --bin stratus-apiserver
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
target/debug/stratus-apiserver --listen "127.0.0.1:$port" --data-dir "$dir/data" \
  --bootstrap-admin "$dir/admin-password" --max-image-upload 1048576 >"$dir/apiserver.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM
# The server speaks only HTTPS, with a certificate of the cluster CA it makes on first start.
ca="$dir/data/pki/ca.crt"
api="https://127.0.0.1:$port"
for _ in $(seq 1 100); do
  [ -f "$ca" ] && curl -fs --cacert "$ca" -o /dev/null "$api/readyz" && break
  sleep 0.1
done
curl -fs --cacert "$ca" -o /dev/null "$api/readyz" || { cat "$dir/apiserver.log" >&2; echo "error: the API server did not start" >&2; exit 1; }

# Every request is authenticated: log in as the first admin (the OAuth password grant), and
# fetch the document with the token (Schemathesis then reads it from the file).
token="$(curl -fsS --cacert "$ca" "$api/auth/token" \
  --data-urlencode grant_type=password --data-urlencode username=admin \
  --data-urlencode "password=$(cat "$dir/admin-password")" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
curl -fsS --cacert "$ca" -H "Authorization: Bearer $token" -o "$dir/openapi.json" "$api/openapi.json"

# From the temporary directory: Schemathesis keeps a cache of what failed in its working
# directory, which does not belong in the repository.
venv_st="$PWD/$venv/bin/st"
config="$PWD/hack/schemathesis/schemathesis.toml"
# The hooks keep the rules between fields the document lists but cannot state, the server's
# state (versions that exist), and end every watch after a second; see the file.
export PYTHONPATH="$PWD/hack/schemathesis" SCHEMATHESIS_HOOKS=hooks
cd "$dir"
# Two retries of a request whose connection failed (--request-retries): what is checked here is
# the API's answers, and the server's connection handling has tests of its own
# (support/tests/server.rs). In two recent CI runs one or two requests got "SSL: EOF occurred in
# violation of protocol" (in one of them builds were loading the machine); a run on a quiet
# machine with the server's connection log on had none, and the cause is not found yet.
# One worker: with two threads, Hypothesis's lambda introspection can trip CPython 3.11's
# non-thread-safe AST recursion counter ("AST constructor recursion depth mismatch"), a crash of
# the tool that is no finding about the API.
"$venv_st" --config-file "$config" run "$dir/openapi.json" --url "$api" --tls-verify "$ca" \
  --header "Authorization: Bearer $token" \
  --checks all --max-examples "$examples" --workers 1 --seed 1 --no-color --request-timeout 10 \
  --request-retries 2 "$@"
