# Shared by the bench scripts (sourced): N orders in the guide's shape in $out/orders.jsonl,
# and the release `dagg` in $dagg (DAGG_BIN=path/to/dagg uses one already built).
# Expects $here (the bench folder) and $n (the number of orders).
root=$(cd "$here/.." && pwd)
out="$here/out"
mkdir -p "$out"
shared="${DAGG_SHARED:-$root/../shared}"
if [ ! -s "$out/orders.jsonl" ] || [ "$(wc -l < "$out/orders.jsonl")" -ne "$n" ]; then
  echo "generating $n orders" >&2
  python3 "$shared/tools/gen-orders" "$n" "$out/orders.jsonl"
fi
if [ -n "${DAGG_BIN:-}" ]; then
  dagg=$DAGG_BIN
else
  (cd "$root" && cargo build --release -q -p dagg-node)
  dagg="${CARGO_TARGET_DIR:-$root/target}/release/dagg"
fi
