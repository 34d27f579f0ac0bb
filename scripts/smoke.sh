#!/usr/bin/env bash
# End-to-end smoke test of the command-line contract (../shared/CONTRACT.md) with real binaries:
# `ordinal-node local` on loopback, then `ordinal submit`, `tail`, `status --json` and a short
# `bench --json`, checking every output format. Stops the cluster by itself (SIGINT), and fails
# if the cluster does not stop cleanly.
#   bash scripts/smoke.sh [TARGET_DIR]     (default: target/debug; builds the binaries there)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug}
if [ -z "${1:-}" ]; then
  cargo build -q -p ordinal-node -p ordinal-client --bins
fi
node="$bin/ordinal-node"
ordinal="$bin/ordinal"
port=${ORDINAL_SMOKE_PORT:-23000}

dir=$(mktemp -d -t ordinal-smoke-XXXXXX)
"$node" local --replicas 4 --base-port "$port" --dir "$dir/cluster" --duration 120 >"$dir/local.out" 2>"$dir/local.log" &
pid=$!
cleanup() {
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "smoke: $*" >&2
  tail -20 "$dir/local.log" >&2 || true
  exit 1
}

for _ in $(seq 100); do
  grep -q '^cluster: ' "$dir/local.out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || fail "ordinal-node local exited"
  sleep 0.1
done
cluster=$(sed -n '1s/^cluster: //p' "$dir/local.out")
[ -f "$cluster" ] || fail "first stdout line is not 'cluster: PATH'"

"$ordinal" submit --cluster "$cluster" --timeout 20 "alice pays bob 5" "bob pays carol 2" >"$dir/submit.out" ||
  fail "submit failed"
"$ordinal" tail --cluster "$cluster" >"$dir/tail.out" || fail "tail failed"
"$ordinal" tail --cluster "$cluster" --replica 2 >"$dir/tail2.out" || fail "tail --replica failed"
"$ordinal" status --cluster "$cluster" --json >"$dir/status.json" || fail "status failed"
"$ordinal" bench --cluster "$cluster" --rate 300 --duration 3 --tx-size 64 --clients 2 \
  --json "$dir/bench.json" >"$dir/bench.out" 2>/dev/null || fail "bench failed"

python3 - "$dir" <<'PY' || fail "an output does not follow the contract"
import hashlib, json, sys
d = sys.argv[1]
def lines(name):
    return [json.loads(l) for l in open(f"{d}/{name}") if l.strip()]
payloads = ["alice pays bob 5", "bob pays carol 2"]
submitted = lines("submit.out")
assert len(submitted) == 2, submitted
for p, r in zip(payloads, submitted):
    assert set(r) == {"seq", "index", "digest", "view"}, r
    assert r["digest"] == hashlib.sha3_256(p.encode()).hexdigest(), r
log = lines("tail.out")
for r in log:
    assert set(r) == {"seq", "index", "client", "nonce", "digest"}, r
positions = {(r["seq"], r["index"]): r["digest"] for r in log}
for r in submitted:
    assert positions.get((r["seq"], r["index"])) == r["digest"], ("receipt not in the log", r)
assert [tuple(r.values()) for r in lines("tail2.out")][: len(log)] == [tuple(r.values()) for r in log], "replica 2 disagrees"
status = json.load(open(f"{d}/status.json"))
assert len(status["replicas"]) == 4, status
for i, r in enumerate(status["replicas"]):
    assert r["id"] == i and r["reachable"] is True and r["weight"] == 1, r
# n - f replicas must have committed the submissions (one may still be applying them).
caught_up = [r for r in status["replicas"] if r["committed_seq"] >= max(s["seq"] for s in submitted)]
assert len(caught_up) >= 3, status
bench = json.load(open(f"{d}/bench.json"))
for key in ("submitted", "committed", "errors", "throughput_tps", "latency_ms"):
    assert key in bench, (key, bench)
assert set(bench["latency_ms"]) >= {"p50", "p90", "p99", "max"}, bench
assert bench["committed"] == bench["submitted"] > 0 and bench["errors"] == 0, bench
print(f"smoke: submit, tail, status and bench follow the contract "
      f"({len(log)} ordered transactions, bench {bench['throughput_tps']:.0f} tx/s, p99 {bench['latency_ms']['p99']} ms)")
PY

kill -INT "$pid"
if ! wait "$pid"; then
  fail "ordinal-node local did not stop cleanly on SIGINT"
fi
trap 'rm -rf "$dir"' EXIT
echo "smoke: ordinal-node local stopped cleanly"
