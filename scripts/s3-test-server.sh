#!/usr/bin/env bash
# An S3-compatible server for the aws_s3 connector's tests: moto's server mode (PyPI
# `moto[server]`, in-memory, any credentials accepted) in a venv, on 127.0.0.1:19000.
# Idempotent: `start` installs what is missing and does nothing when the server already
# answers; `stop` ends the server this script started. DAGG_S3_AUTH=1 starts one that checks
# credentials (moto's INITIAL_NO_AUTH_ACTION_COUNT=0: every unknown key is refused), for the
# bad-credentials test, on the port DAGG_S3_PORT names.
#
#   scripts/s3-test-server.sh start | stop | status
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${DAGG_S3_PORT:-19000}"
VENV="${DAGG_S3_VENV:-target/.venv-moto}"
MOTO="moto[server]==5.1.18"
PIDFILE="target/s3-moto-$PORT.pid"
LOG="target/s3-moto-$PORT.log"

NAME=s3
. scripts/lib/test-server.sh

case "${1:-start}" in
  start)
    if up; then
      echo "s3: a server answers on 127.0.0.1:$PORT" >&2
      exit 0
    fi
    mkdir -p target
    # Starters racing (parallel tests): one at a time installs and starts; the others then
    # find the server up.
    exec 9>"target/s3-moto.lock"
    flock 9
    ensure_venv
    if [ ! -x "$VENV/bin/moto_server" ]; then
      echo "s3: installing $MOTO" >&2
      "$VENV/bin/pip" install -q "$MOTO"
    fi
    if ! up; then
      if [ "${DAGG_S3_AUTH:-0}" = 1 ]; then export INITIAL_NO_AUTH_ACTION_COUNT=0; fi
      nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" </dev/null >"$LOG" 2>&1 9>&- &
      echo $! >"$PIDFILE"
    fi
    wait_up 150
    ;;
  *) other_command "$1" ;;
esac
