#!/usr/bin/env bash
# Runs the app (cargo run -p app) against a Redis that answers.
#
# Uses the Redis at $APP__REDIS__URL (default redis://127.0.0.1:6379). If none
# answers there and it is on this machine, starts a redis-server on that port
# (installing the Debian package first if it is missing and we are root), and
# stops it again, by PID, when the app exits. Extra arguments go to cargo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(workspace_root)"

ensure_command redis-server redis-server
ensure_command redis-cli redis-server

url=${APP__REDIS__URL:-redis://127.0.0.1:6379}
started_pid=""
stop_started_redis() {
  if [ -n "$started_pid" ] && kill -0 "$started_pid" 2>/dev/null; then
    echo "==> stopping the redis-server this script started (pid $started_pid)"
    kill "$started_pid"
    wait "$started_pid" 2>/dev/null || true
  fi
}
trap stop_started_redis EXIT

if redis-cli -u "$url" ping >/dev/null 2>&1; then
  echo "==> using the Redis that answers at ${url%%@*}"
else
  # host:port from redis://[user:pass@]host:port[/db]
  authority=${url#*://}
  authority=${authority##*@}
  authority=${authority%%/*}
  host=${authority%:*}
  port=${authority##*:}
  [ "$port" = "$authority" ] && port=6379
  case "$host" in
    127.0.0.1 | localhost) ;;
    *)
      echo "error: no Redis answers at $host:$port, and it is not on this machine: start it, or set APP__REDIS__URL" >&2
      exit 1
      ;;
  esac
  echo "==> starting redis-server on 127.0.0.1:$port (no persistence)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning &
  started_pid=$!
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 || { echo "error: redis-server did not start on port $port" >&2; exit 1; }
fi

echo "==> cargo run -p app $*"
cargo run -p app "$@"
