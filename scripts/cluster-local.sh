#!/usr/bin/env bash
# A three-node dagg cluster on this machine, to try the cluster out.
#
#   scripts/cluster-local.sh [DIR]        (default DIR: ./.dagg-cluster)
#
# Builds `dagg`, starts three `dagg serve` processes on loopback — APIs on 127.0.0.1:8001,
# 8002, 8003, peer ports 9001, 9002, 9003 — with data in DIR/node1..3 and a shared run-state
# folder DIR/shared (so a run moves to another node when its node dies), waits until they
# agree on a leader, prints `GET /cluster`, and stops them all on Ctrl-C. The admin password
# is DAGG_ADMIN_PASSWORD, or `admin-password-1` when unset. Logs: DIR/node<N>.log.
# The peer ports stay on loopback and the nodes authenticate each other with one cluster
# token, DIR/cluster-token (generated once, mode 0600; see docs/cluster.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mkdir -p "${1:-.dagg-cluster}" && cd "${1:-.dagg-cluster}" && pwd)
password=${DAGG_ADMIN_PASSWORD:-admin-password-1}

(cd "$root" && cargo build -q -p dagg-node)
dagg="$root/target/debug/dagg"
peers="1=127.0.0.1:9001,2=127.0.0.1:9002,3=127.0.0.1:9003"
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM
mkdir -p "$dir/shared"
if [ ! -s "$dir/cluster-token" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/cluster-token")
fi
for i in 1 2 3; do
  DAGG_ADMIN_PASSWORD="$password" "$dagg" serve --node-id "$i" --api-addr "127.0.0.1:800$i" \
    --peer-addr "127.0.0.1:900$i" --peers "$peers" --data-dir "$dir/node$i" --shared-dir "$dir/shared" --cluster-token-file "$dir/cluster-token" \
    > "$dir/node$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 300); do
    grep -q "listening on" "$dir/node$i.log" && break
    kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { cat "$dir/node$i.log" >&2; exit 1; }
    sleep 0.2
  done
  grep -q "listening on" "$dir/node$i.log" || { echo "node $i did not start; see $dir/node$i.log" >&2; exit 1; }
done
token=$(curl -sf -X POST http://127.0.0.1:8001/auth/login -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
echo "three nodes up. GET http://127.0.0.1:8002/cluster:"
curl -sf http://127.0.0.1:8002/cluster -H "Authorization: Bearer $token"
echo
cat <<TXT

  APIs:   http://127.0.0.1:8001  http://127.0.0.1:8002  http://127.0.0.1:8003  (docs at /docs)
  login:  admin / $password
  try:    kill one node (kill ${pids[0]}), then GET /cluster on another: a new leader, node 1 down.
  Ctrl-C stops all three (data stays in $dir).
TXT
wait
