#!/usr/bin/env bash
# One run of the weights experiment on a real local cluster: five `ordinal-node` processes on
# loopback, some of them slowed by the [testing] delay knobs, open-loop load from `ordinal bench`.
#
#   scripts/slow-replica.sh NAME PROTOCOL "SLOWED_IDS" WEIGHTS RATE [DURATION_S]
#
#   PROTOCOL  pbft | linear
#   SLOWED    replica ids to slow, e.g. "0" (PBFT's first primary) or "4" or "3 4"
#   WEIGHTS   equal   weights fixed (no [weights] table)
#             bounds  weight changes enabled within 1..2, but no latency reports
#             reports weights follow the replicas' latency reports (AWARE medians)
#   RATE      transactions per second (256 bytes each)
#
# Environment: RECV_DELAY and SEND_DELAY (ms, default 20 and 20) for the slowed replicas;
# CLIENTS (default 4); BASE_PORT (default 27000; metrics on BASE_PORT+100+i); OUT (default
# /tmp/ordinal-slow). Needs the release binaries: cargo build --release -p ordinal-node -p ordinal-client.
# Prints p50/p90/p99/max, the weights in force and the view; everything is kept in OUT/NAME.
set -euo pipefail
if [ $# -lt 5 ]; then sed -n '2,18p' "$0"; exit 2; fi
name=$1 protocol=$2 slowed=$3 weights=$4 rate=$5 duration=${6:-25}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
for b in ordinal-node ordinal; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: cargo build --release -p ordinal-node -p ordinal-client" >&2; exit 1; }
done
base_port=${BASE_PORT:-27000}
dir="${OUT:-/tmp/ordinal-slow}/$name"
rm -rf "$dir"; mkdir -p "$dir"
case $weights in
  equal) extra=() ;;
  bounds) extra=(--weight-bounds 1,2) ;;
  reports) extra=(--weight-bounds 1,2 --weight-reports-every 1) ;;
  *) echo "WEIGHTS must be equal, bounds or reports" >&2; exit 2 ;;
esac
"$bin/ordinal-node" testnet --replicas 5 --protocol "$protocol" --request-auth unsigned \
  --base-port "$base_port" --out "$dir/net" "${extra[@]}" >/dev/null
for i in $slowed; do
  printf '\n[testing]\npeer_receive_delay_ms = %s\npeer_send_delay_ms = %s\n' \
    "${RECV_DELAY:-20}" "${SEND_DELAY:-20}" >> "$dir/net/node-$i/config.toml"
done
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
for i in 0 1 2 3 4; do
  RUST_LOG=info "$bin/ordinal-node" run --config "$dir/net/node-$i/config.toml" > "$dir/node-$i.log" 2>&1 &
  pids+=($!)
done
sleep 2
"$bin/ordinal" bench --cluster "$dir/net/client.toml" --rate "$rate" --duration "$duration" \
  --tx-size 256 --clients "${CLIENTS:-4}" --json "$dir/bench.json" > "$dir/bench.out" 2>&1
"$bin/ordinal" status --cluster "$dir/net/client.toml" > "$dir/status.out" 2>&1 || true
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
r = json.load(open(d + "/bench.json"))
l = r["latency_ms"]
print(f"{d.rsplit('/', 1)[-1]}: committed {r['committed']}/{r['submitted']} "
      f"p50 {l['p50']:.1f} p90 {l['p90']:.1f} p99 {l['p99']:.1f} max {l['max']:.1f} ms")
print("  slowest receipt per second (ms):", [round(x) for x in r.get("per_second_max_ms", [])])
PY
awk 'NR == 1 || $1 ~ /^[0-9]+$/ { print "  " $0 }' "$dir/status.out"
grep -h "weight epoch scheduled" "$dir/node-1.log" | sed 's/.*INFO ordinal_node::driver: /  /' || true
