#!/usr/bin/env bash
# The admin API under load: `GET /pipelines` with 1,000 pipelines stored, at a fixed rate.
#
#   bench/api.sh [RATE] [SECONDS] [PIPELINES]      (defaults: 500 requests/s, 30 s, 1000)
#
# Builds the release `dagg` and the open-loop load generator (api/examples/loadgen.rs:
# latency from each request's scheduled time, so queueing is counted), starts `dagg serve`
# on a free loopback port with a temporary data directory, creates the pipelines through the
# API, warms up for 5 s, then measures and prints p50/p90/p99/max. Exits non-zero when p99
# is 20 ms or more, or any request failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rate=${1:-500}
secs=${2:-30}
count=${3:-1000}

(cd "$root" && cargo build --release -q -p dagg-node && cargo build --release -q -p dagg-api --example loadgen)
dagg="$root/target/release/dagg"
loadgen="$root/target/release/examples/loadgen"

data=$(mktemp -d "${TMPDIR:-/tmp}/dagg-bench-api.XXXXXX")
password="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
DAGG_ADMIN_PASSWORD="$password" DAGG_DATA_DIR="$data/home" "$dagg" serve --api-addr 127.0.0.1:0 2> "$data/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 200); do
  addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$data/serve.log" | head -n 1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$data/serve.log" >&2; exit 1; }

token=$(ADDR="$addr" PASSWORD="$password" COUNT="$count" python3 - <<'PY'
import json, os, urllib.request
base = "http://" + os.environ["ADDR"]
def call(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req) as r:
        return json.load(r)
token = call("/auth/login", {"username": "admin", "password": os.environ["PASSWORD"]})["access_token"]
for i in range(int(os.environ["COUNT"])):
    call("/pipelines", {
        "name": f"orders-{i:04}",
        "description": "bench pipeline: completed orders, title-cased, with totals",
        "source": {"connector_type": "file", "config": {"path": f"in/orders-{i}.jsonl", "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}},
        ],
        "destination": {"connector_type": "file", "config": {"path": f"out/orders-{i}.jsonl", "format": "jsonl"}},
        "schedule": {"type": "cron", "expression": "0 8 * * *", "timezone": "UTC"},
    }, token)
print(token)
PY
)
echo "stored $count pipelines; warming up" >&2
"$loadgen" "$addr" /pipelines "$rate" 5 32 "Authorization: Bearer $token" > /dev/null
echo "measuring GET /pipelines at $rate requests/s for $secs s" >&2
result=$("$loadgen" "$addr" /pipelines "$rate" "$secs" 32 "Authorization: Bearer $token")
echo "$result"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
p99=$(echo "$result" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')
errors=$(echo "$result" | sed -n 's/.*errors=\([0-9]*\) non_2xx=\([0-9]*\).*/\1 \2/p')
if [ "$errors" != "0 0" ] || [ "$(echo "$p99 >= 20" | bc -l)" = 1 ]; then
  echo "FAIL: p99 ${p99} ms (limit 20 ms), errors/non-2xx: $errors" >&2
  exit 1
fi
echo "OK: p99 ${p99} ms < 20 ms"
