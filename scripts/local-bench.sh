#!/usr/bin/env bash
# The main job: a local 4-replica cluster on loopback (no Docker) under open-loop load.
#   bash scripts/local-bench.sh [RATE] [DURATION] [TX_SIZE]     (defaults: 5000 20 512)
#   PROTOCOL=linear bash scripts/local-bench.sh                 (the linear mode; default pbft)
# Installs missing system packages, builds the release binaries, starts `ordinal-node local`,
# runs `ordinal bench` against it, stops the cluster, and leaves the JSON report in
# target/bench-local.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-5000}
duration=${2:-20}
tx_size=${3:-512}
protocol=${PROTOCOL:-pbft}

bash scripts/setup.sh
cargo build --release -p ordinal-node -p ordinal-client

dir=$(mktemp -d -t ordinal-local-XXXXXX)
out="$dir/local.out"
target/release/ordinal-node local --replicas 4 --protocol "$protocol" --dir "$dir/cluster" >"$out" 2>"$dir/local.log" &
local_pid=$!
cleanup() {
  kill -INT "$local_pid" 2>/dev/null || true
  wait "$local_pid" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 100); do
  grep -q '^cluster: ' "$out" 2>/dev/null && break
  kill -0 "$local_pid" 2>/dev/null || { cat "$dir/local.log" >&2; exit 1; }
  sleep 0.1
done
cluster=$(sed -n 's/^cluster: //p' "$out" | head -1)
[ -n "$cluster" ] || { echo "ordinal-node local did not start" >&2; cat "$dir/local.log" >&2; exit 1; }
echo "cluster: $cluster (replica logs: $dir/local.log)"

target/release/ordinal bench --cluster "$cluster" --rate "$rate" --duration "$duration" \
  --tx-size "$tx_size" --json target/bench-local.json
target/release/ordinal status --cluster "$cluster"
echo "report: target/bench-local.json"
