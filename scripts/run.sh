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
# Parts of redis[s]://[user[:password]@]host[:port][/db]. The password is
# never printed, and never put on a command line (`ps` would show it).
scheme=${url%%://*}
authority=${url#*://}
authority=${authority%%/*}
userinfo=""
case "$authority" in *@*) userinfo=${authority%@*}; authority=${authority##*@} ;; esac
host=${authority%:*}
port=${authority##*:}
[ "$port" = "$authority" ] && port=6379
user=${APP__REDIS__USERNAME:-}
password=${APP__REDIS__PASSWORD:-}
if [ -n "$userinfo" ]; then
  case "$userinfo" in
    *:*) [ -z "$user" ] && user=${userinfo%%:*}; [ -z "$password" ] && password=${userinfo#*:} ;;
    *) [ -z "$password" ] && password=$userinfo ;;
  esac
fi
shown="$scheme://$host:$port"

answers() {
  local args=(-h "$host" -p "$port")
  [ "$scheme" = rediss ] && args+=(--tls)
  [ -n "$user" ] && args+=(--user "$user")
  REDISCLI_AUTH=$password redis-cli "${args[@]}" ping 2>/dev/null | grep -q PONG
}

started_pid=""
stop_started_redis() {
  if [ -n "$started_pid" ] && kill -0 "$started_pid" 2>/dev/null; then
    echo "==> stopping the redis-server this script started (pid $started_pid)"
    kill "$started_pid"
    wait "$started_pid" 2>/dev/null || true
  fi
}
trap stop_started_redis EXIT

if answers; then
  echo "==> using the Redis that answers at $shown"
else
  case "$host" in
    127.0.0.1 | localhost) ;;
    *)
      echo "error: no Redis answers at $shown, and it is not on this machine: start it, or set APP__REDIS__URL" >&2
      exit 1
      ;;
  esac
  if [ "$scheme" = rediss ]; then
    echo "error: no Redis answers at $shown; this script starts only plain local servers: start a TLS one yourself" >&2
    exit 1
  fi
  # The credentials the app will use, given to the new server on stdin.
  config=""
  if [ -n "$user" ]; then
    config=$'user default off\n'"user $user on >$password ~* &* +@all"
  elif [ -n "$password" ]; then
    config="requirepass $password"
  fi
  echo "==> starting redis-server on 127.0.0.1:$port (no persistence${config:+, with the configured credentials})"
  printf '%s\n' "$config" | redis-server - --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning &
  started_pid=$!
  for _ in $(seq 1 50); do
    answers && break
    sleep 0.1
  done
  answers || { echo "error: redis-server did not start on port $port" >&2; exit 1; }
fi

echo "==> cargo run -p app $*"
cargo run -p app "$@"
