#!/usr/bin/env bash
# Property-based API testing: schemathesis (from PyPI) generates requests from /openapi.json
# of a running `dagg serve` and checks every answer against the document (no server errors,
# documented status codes, content types and response schemas, auth enforced).
#
#   scripts/schemathesis.sh            (ST_MAX_EXAMPLES=N for more examples per operation)
#
# Installs schemathesis into .venv-schemathesis (ignored by git), starts the debug binary on
# a free loopback port with a temporary data directory, authenticates with an admin's
# personal API key (a key, not a session: a generated `POST /auth/logout` cannot end it),
# and again with an editor's, stops the server, prints a summary and exits non-zero on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv-schemathesis"
st_version="4.32.5"

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
  echo "schemathesis: installing $st_version into .venv-schemathesis" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
fi

# The binary the test build made (`cargo build -p` would build every dependency again with
# other features: minutes on CI).
cargo test -q --workspace --no-run
data=$(mktemp -d "${TMPDIR:-/tmp}/dagg-schemathesis.XXXXXX")
log="$data/serve.log"
password="st-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
DAGG_ADMIN_PASSWORD="$password" DAGG_DATA_DIR="$data/home" DAGG_LOG=warn \
  "${CARGO_TARGET_DIR:-$root/target}/debug/dagg" serve --api-addr 127.0.0.1:0 2> "$log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

addr=""
for _ in $(seq 200); do
  addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "schemathesis: dagg serve did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; echo "schemathesis: dagg serve did not say where it listens" >&2; exit 1; }

# An admin's and an editor's API keys, through the API itself: the run is made once with
# each (an editor reaches fewer routes; every refusal must be a documented 403, never a 5xx).
keys=$(ADDR="$addr" PASSWORD="$password" python3 - <<'PY'
import json, os, secrets, urllib.request
base = "http://" + os.environ["ADDR"]
def call(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req) as r:
        return json.load(r)
token = call("/auth/login", {"username": "admin", "password": os.environ["PASSWORD"]})["access_token"]
admin_key = call("/me/api-keys", {"name": "schemathesis"}, token)["key"]
editor_password = "ed-" + secrets.token_hex(8)
call("/users", {"username": "st-editor", "role": "editor", "password": editor_password}, token)
editor = call("/auth/login", {"username": "st-editor", "password": editor_password})["access_token"]
# The editor first: the admin's run may delete or reset users, never the other way round.
print("editor", call("/me/api-keys", {"name": "schemathesis"}, editor)["key"])
print("admin", admin_key)
PY
)

# Every check runs but `positive_data_acceptance`: pipeline documents, transformation rules,
# e-mail addresses, passwords and time ranges are validated further than JSON Schema can say
# (with every error's path in a 400), so a body that fits the schema may still be refused.
# No sign-up flow discovery: the run authenticates with the keys above.
printf '[auth]\nauto-signup = false\n' > "$data/schemathesis.toml"

set +e
# Run from the temporary folder: schemathesis and hypothesis keep caches in the working directory.
cd "$data"
rc=0
# `PUT /users/{id}`, `PUT /users/{id}/password` and `DELETE /users/{id}` can demote, reset or
# delete the admin whose key the run uses (a reset revokes the user's keys): the admin's run
# tests them last, on their own, so they cannot cut the rest of the run short.
users='^/users/\{id\}(/password)?$'
run() {
  local role=$1 key=$2 examples=$3; shift 3
  echo "schemathesis: as $role $*" >&2
  "$venv/bin/schemathesis" --config-file "$data/schemathesis.toml" run "http://$addr/openapi.json" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --header "Authorization: Bearer $key" \
    --max-examples "$examples" \
    --workers 2 \
    --seed "${ST_SEED:-1}" \
    --no-color \
    "$@" ${ST_EXTRA:-} || { rc=$?; echo "schemathesis: the run as $role failed (exit $rc)" >&2; }
}
while read -r role key; do
  if [ "$role" = editor ]; then
    # Fewer examples: the editor's routes are the admin's, less the admin-only ones (which
    # must be refused with a documented 403).
    run editor "$key" "${ST_EDITOR_MAX_EXAMPLES:-10}"
  else
    run admin "$key" "${ST_MAX_EXAMPLES:-30}" --exclude-path-regex "$users"
    kill -0 "$pid" 2>/dev/null && run admin "$key" "${ST_MAX_EXAMPLES:-30}" --include-path-regex "$users"
  fi
  kill -0 "$pid" 2>/dev/null || break
done <<< "$keys"
set -e
if ! kill -0 "$pid" 2>/dev/null; then
  echo "schemathesis: dagg serve died during the run" >&2
  cat "$log" >&2
  rc=1
fi
if [ "$rc" -eq 0 ]; then
  echo "schemathesis: passed (no server errors, every answer conforms to /openapi.json)"
else
  echo "schemathesis: FAILED (exit $rc); the server log:" >&2
  tail -n 50 "$log" >&2
fi
exit "$rc"
