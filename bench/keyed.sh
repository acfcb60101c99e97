#!/usr/bin/env bash
# Keyed instances: the same aggregation of N orders per customer with `parallelism` 1, 2 and 4.
#
#   bench/keyed.sh [N] [RUNS]      (defaults: 1000000 orders, 3 runs each; median reported)
#   DAGG_BIN=path/to/dagg bench/keyed.sh   (use that release binary instead of building one)
#
# The chain: total = quantity × price, keep `completed`, then per customer_id the sum, count,
# average and count of distinct products (about 100k groups in 1M orders). Prints the median
# seconds, records/s and peak resident memory of each parallelism, and checks that every
# parallelism wrote the same groups.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-1000000}
runs=${2:-3}
. "$here/common.sh"

doc() { # doc PARALLELISM
  cat <<JSON
{"name": "bench-keyed-$1",
 "source": {"connector_type": "file", "config": {"path": "$out/orders.jsonl", "format": "jsonl"}},
 "transformations": [
   {"type": "field_calculation", "field_name": "total_price", "operation": "multiply",
    "parameters": {"source_fields": ["quantity", "price"], "output_field": "total_price"}},
   {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}},
   {"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [
     {"input_field": "total_price", "output_field": "revenue", "operation": "sum"},
     {"input_field": "order_id", "output_field": "orders", "operation": "count"},
     {"input_field": "total_price", "output_field": "average", "operation": "average"},
     {"input_field": "product_name", "output_field": "products", "operation": "count_distinct"}]}
 ],
 "destination": {"connector_type": "file", "config": {"path": "$out/keyed-$1-out.jsonl", "format": "jsonl"}},
 "parallelism": $1}
JSON
}

printf '%-12s %10s %14s %12s\n' parallelism seconds records/s "peak MiB"
for p in 1 2 4; do
  doc "$p" > "$out/keyed-$p.json"
  secs=() rss=()
  for _ in $(seq "$runs"); do
    rm -rf "$out/keyed-home"
    t0=$(date +%s.%N)
    DAGG_HOME="$out/keyed-home" /usr/bin/time -f "%M" -o "$out/time.txt" "$dagg" run "$out/keyed-$p.json" > "$out/keyed-$p.log" 2>&1
    t1=$(date +%s.%N)
    secs+=("$(echo "$t1 - $t0" | bc -l)")
    rss+=("$(tail -n 1 "$out/time.txt")")
  done
  s=$(printf '%s\n' "${secs[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
  kib=$(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
  printf '%-12s %10.2f %14.0f %12.1f\n' "$p" "$s" "$(echo "$n / $s" | bc -l)" "$(echo "$kib / 1024" | bc -l)"
  sort "$out/keyed-$p-out.jsonl" > "$out/keyed-$p-sorted.jsonl"
done
for p in 2 4; do
  if ! cmp -s "$out/keyed-1-sorted.jsonl" "$out/keyed-$p-sorted.jsonl"; then
    echo "MISMATCH: parallelism $p wrote other groups than parallelism 1" >&2
    exit 1
  fi
done
echo "groups: $(wc -l < "$out/keyed-1-out.jsonl"), the same for every parallelism"
