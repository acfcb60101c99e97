#!/usr/bin/env bash
# The guide's e-commerce chain, file to file: dagg against peer systems on the same input.
#
#   bench/ecommerce.sh [N] [RUNS]      (defaults: 1000000 records, 3 runs each)
#
# Generates N orders (JSONL, the guide's shape) with ../shared/tools/gen-orders, runs the
# release `dagg` and each peer RUNS times as whole processes under /usr/bin/time, and prints
# the median records/s and peak memory (max RSS) of each, and dagg's ratio to each peer.
# Peers: plain Python (always); bytewax when BYTEWAX=1 (installed into bench/out/.venv-bytewax).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-1000000}
runs=${2:-3}
. "$here/common.sh"

# measure NAME CMD... : runs CMD $runs times; prints "NAME median_seconds median_maxrss_kib"
measure() {
  local name=$1; shift
  local secs=() rss=()
  for _ in $(seq "$runs"); do
    rm -f "$out"/*-out.jsonl "$out"/*-dead.jsonl
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$out/time.txt" "$@" > "$out/$name.log" 2>&1
    t1=$(date +%s.%N)
    secs+=("$(echo "$t1 - $t0" | bc -l)")
    rss+=("$(tail -n 1 "$out/time.txt")")
  done
  local ms mr
  ms=$(printf '%s\n' "${secs[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
  mr=$(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
  echo "$name $ms $mr"
}

results=()
results+=("$(measure dagg "$dagg" run "$here/ecommerce.json")")
written=$(wc -l < "$out/dagg-out.jsonl"); dead=$(wc -l < "$out/dagg-dead.jsonl")
results+=("$(measure python python3 "$shared/peers/baseline.py" "$out/orders.jsonl" "$out/python-out.jsonl" "$out/python-dead.jsonl")")
py_written=$(wc -l < "$out/python-out.jsonl")
if [ "$written" -ne "$py_written" ]; then
  echo "MISMATCH: dagg wrote $written records, plain Python $py_written" >&2
  exit 1
fi
if [ "${BYTEWAX:-0}" = 1 ]; then
  if [ ! -x "$out/.venv-bytewax/bin/python" ]; then
    python3 -m venv "$out/.venv-bytewax" && "$out/.venv-bytewax/bin/pip" install -q bytewax
  fi
  results+=("$(cd "$shared/peers" && IN="$out/orders.jsonl" OUT="$out/bytewax-out.jsonl" DEAD="$out/bytewax-dead.jsonl" measure bytewax "$out/.venv-bytewax/bin/python" -m bytewax.run bytewax_flow:flow)")
fi

echo
echo "input: $n orders ($(du -h "$out/orders.jsonl" | cut -f1)); dagg wrote $written, dead-lettered $dead; median of $runs runs"
printf '%-10s %10s %14s %12s\n' system seconds records/s "peak MiB"
dagg_secs=""
for r in "${results[@]}"; do
  read -r name s kib <<< "$r"
  [ "$name" = dagg ] && dagg_secs=$s
  printf '%-10s %10.2f %14.0f %12.1f\n' "$name" "$s" "$(echo "$n / $s" | bc -l)" "$(echo "$kib / 1024" | bc -l)"
done
for r in "${results[@]}"; do
  read -r name s _ <<< "$r"
  [ "$name" = dagg ] && continue
  printf 'dagg is %.1fx %s\n' "$(echo "$s / $dagg_secs" | bc -l)" "$name"
done
