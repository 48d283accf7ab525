#!/usr/bin/env bash
# Runs schemathesis against the OpenAPI document of a running lidod:
#   bash fuzz/schemathesis.sh [MAX_EXAMPLES]
# Starts lidod (the debug build; `cargo build -p lidod` first) on a free
# loopback port with a throwaway data dir, checks every documented
# operation with every schemathesis check, and stops lidod. Passes when
# schemathesis finds no 5xx and no schema violation.
#
# Left out: draining and undraining the node, after which 503 "no node
# available" is the right answer to spawns; their inputs are still checked
# by the bad-input tests. Stopping services stays in.
#
# Known, not schema bugs (the schema cannot say them, they depend on state):
# an order below its instrument's lot or minimum (400 invalid_quantity), a
# trader whose program does not exist (400 invalid_option), a cancel
# after the run stopped the order's broker (503 broker_unavailable), and a
# market pool naming a broker that does not exist or one broker twice (400
# unknown_broker, invalid_pool: refused, nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-50}
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install -q schemathesis
fi
lidod=target/debug/lidod
[ -x "$lidod" ] || cargo build -q -p lidod
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
"$lidod" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
    addr=$(sed -n 's/^lidod listening on //p' "$work/out" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "lidod did not start:" >&2; cat "$work/log" >&2; exit 1; }
schemathesis run "$addr/v1/openapi.json" --checks all --max-examples "$examples" --seed 1 --workers 2 \
    --exclude-path-regex '^/v1/nodes/.*/(drain|undrain)$' \
    --report junit --report-dir "$work/report"
