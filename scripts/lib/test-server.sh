# Shared by the scripts that install and start a server for the tests (scripts/kafka.sh,
# scripts/s3-test-server.sh). Source it after setting NAME (for messages), PORT, VENV,
# PIDFILE and LOG, from the repository's root.

up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# A Python venv at $VENV. The first python3 on PATH may lack ensurepip; the system one may
# have it; a fresh Debian machine may need python3-venv first.
ensure_venv() {
  [ -x "$VENV/bin/python" ] && return 0
  python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; /usr/bin/python3 -m venv "$VENV" 2>/dev/null; } \
    || { rm -rf "$VENV"; apt-get update -qq && apt-get install -y -q python3-venv >/dev/null && /usr/bin/python3 -m venv "$VENV"; }
}

# Waits up to $1 tenths of a second for the server to answer; exits 0 when it does, else
# shows its log and exits 1.
wait_up() {
  for _ in $(seq 1 "$1"); do
    if up; then
      echo "$NAME: started on 127.0.0.1:$PORT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))" >&2
      exit 0
    fi
    sleep 0.1
  done
  echo "$NAME: nothing answers on 127.0.0.1:$PORT; its log:" >&2
  cat "$LOG" >&2
  exit 1
}

# The `stop` and `status` commands, and the usage line for anything else.
other_command() {
  case "$1" in
    stop)
      if [ -f "$PIDFILE" ]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
      fi
      ;;
    status)
      if up; then echo "up"; else echo "down"; exit 1; fi
      ;;
    *)
      echo "usage: $0 start|stop|status" >&2
      exit 2
      ;;
  esac
}
