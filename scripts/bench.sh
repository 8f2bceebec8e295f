#!/usr/bin/env bash
# The benchmark: our app against its ceiling (a bare actix-web handler, no
# Redis), its two peers (actix-session with its Redis store; axum +
# tower-sessions with tower-sessions-redis-store) and the floor (one bare
# HINCRBY per request: what any Redis-backed session must at least do), side
# by side in ONE run on this machine, with wrk on 127.0.0.1. Each workload
# runs in several rounds, interleaved with the others, and the median is
# reported: the machine is shared, and one run of a workload can be 10-30%
# off.
#
#   scripts/bench.sh                 the full run (about 5 minutes)
#   scripts/bench.sh --smoke         1-second runs and small populations: CI checks it still runs
#   scripts/bench.sh --out FILE      also write the report (markdown) to FILE
#
# Prints the ranking of the two GET /count workloads (ours, both peers and
# the floor: req/s, p99, Redis and app CPU per request, ours / the faster
# peer), the targets of issue 16 (met or missed), then every workload (req/s,
# Redis and app CPU per request, p50, p99, Redis commands per request,
# ratios), Redis memory per session, the app's RSS under load, and the
# scaling check (1,000 vs 1,000,000 sessions in Redis).
#
# CPU per request: utime + stime of the server's process and of redis-server
# (/proc/PID/stat, in clock ticks) over one timed run, divided by the
# requests wrk completed in it, in microseconds.
#
# Everything it starts is stopped by PID when it exits, however it exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(workspace_root)
cd "$root"

smoke=false
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=true ;;
    --out) out=$2; shift ;;
    *) echo "usage: scripts/bench.sh [--smoke] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

if $smoke; then
  duration=1s; warmup=1s; rounds=1; live_sessions=200; memory_sessions=10000; big_population=20000
else
  duration=5s; warmup=1s; rounds=${BENCH_ROUNDS:-3}; live_sessions=1000; memory_sessions=100000; big_population=1000000
fi
connections=32
wrk_threads=2
# Workers for every server: the same for all of them, so the comparison is fair.
workers=${BENCH_WORKERS:-2}

ensure_command redis-server redis-server
ensure_command redis-cli redis-server
ensure_command wrk wrk
ensure_command python3 python3
ensure_command curl curl

build_bench_servers

dir=$(mktemp -d -t session-bench.XXXXXX)
pids=()
cleanup() { stop_and_clean "$dir" "${pids[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for DESCRIPTION COMMAND...
  for _ in $(seq 1 200); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: $1 did not come up; logs in $dir" >&2
  tail -n 5 "$dir"/*.log >&2 || true
  exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" &
redis_pid=$!
pids+=($redis_pid)
rcli() { redis-cli -p "$redis_port" "$@"; }
wait_for redis rcli ping

# APP__SERVER__METRICS_ADDR= (empty): no metrics listener. Nothing here
# scrapes, the baselines have none, and several nodes share this host.
app_port=$(free_port); peer_port=$(free_port); ceiling_port=$(free_port); floor_port=$(free_port)
sealed_port=$(free_port); tower_port=$(free_port); logged_port=$(free_port)
# Each app runs without the per-client limit on new sessions
# (NEW_SESSION_LIMIT__PER_SECOND=0): the peers have none, and all the load
# comes from one address (login.lua creates a session per request).
APP__REDIS__URL="redis://127.0.0.1:$redis_port" APP__SERVER__PORT=$app_port \
  APP__SERVER__WORKERS=$workers APP__SERVER__METRICS_ADDR= APP__SERVER__ACCESS_LOG=false RUST_LOG=warn \
  APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0 \
  "$app_bin" >"$dir/app.log" 2>&1 &
app_pid=$!
pids+=($app_pid)
# The same app with session values encrypted at rest (a random bench key)
# and its own key prefix: the cost of encryption, in this run.
APP__REDIS__URL="redis://127.0.0.1:$redis_port" APP__SERVER__PORT=$sealed_port \
  APP__SERVER__WORKERS=$workers APP__SERVER__METRICS_ADDR= APP__SERVER__ACCESS_LOG=false RUST_LOG=warn \
  APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0 \
  APP__SESSION__ENCRYPTION__KEYS="bench:$(head -c 32 /dev/urandom | base64)" \
  APP__STORE__KEY_PREFIX=sealed_sid_ \
  "$app_bin" >"$dir/sealed.log" 2>&1 &
sealed_pid=$!
pids+=($sealed_pid)
# The same app with its access log on (the default, at the default log level),
# written to a file: what the access log costs, in this run. Same Redis, same
# key prefix: ours.cookies are its sessions too.
APP__REDIS__URL="redis://127.0.0.1:$redis_port" APP__SERVER__PORT=$logged_port \
  APP__SERVER__WORKERS=$workers APP__SERVER__METRICS_ADDR= APP__SERVER__ACCESS_LOG=true RUST_LOG=info \
  APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0 \
  "$app_bin" >"$dir/logged.log" 2>&1 &
logged_pid=$!
pids+=($logged_pid)
REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$peer_port WORKERS=$workers \
  "$peer_bin" >"$dir/peer.log" 2>&1 &
peer_pid=$!
pids+=($peer_pid)
REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$tower_port WORKERS=$workers \
  "$tower_bin" >"$dir/tower.log" 2>&1 &
tower_pid=$!
pids+=($tower_pid)
PORT=$ceiling_port WORKERS=$workers "$ceiling_bin" >"$dir/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=($ceiling_pid)
REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$floor_port WORKERS=$workers \
  "$floor_bin" >"$dir/floor.log" 2>&1 &
floor_pid=$!
pids+=($floor_pid)
wait_for app curl -sf "http://127.0.0.1:$app_port/healthz"
wait_for "app, access log on" curl -sf "http://127.0.0.1:$logged_port/healthz"
wait_for "peer actix-session" curl -sf "http://127.0.0.1:$peer_port/healthz"
wait_for "peer tower-sessions" curl -sf "http://127.0.0.1:$tower_port/healthz"
wait_for ceiling curl -sf "http://127.0.0.1:$ceiling_port/healthz"
wait_for floor curl -sf "http://127.0.0.1:$floor_port/healthz"
wait_for sealed curl -sf "http://127.0.0.1:$sealed_port/healthz"

echo "==> sessions for the existing-session workloads: $live_sessions on each server"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$live_sessions" >"$dir/ours.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$peer_port/count" "$live_sessions" >"$dir/peer.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$tower_port/count" "$live_sessions" >"$dir/tower.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/login" "$live_sessions" >"$dir/signed_in.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$sealed_port/login" "$live_sessions" >"$dir/sealed.cookies"

# Total Redis commands executed so far (INFO commandstats, script-internal
# commands included), and EVAL/EVALSHA calls alone.
redis_calls() {
  rcli info commandstats | awk -F'[:=,]' '/^cmdstat_/ {n += $3} END {print n + 0}'
}

# cpu_ticks PID: the user + system CPU time PID has used (all its threads),
# in clock ticks. Fields 14 and 15 of /proc/PID/stat, counted after the
# command name, which may hold spaces.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)
# us_per_request TICKS REQUESTS: microseconds of CPU per request.
us_per_request() { awk -v t="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}'; }

rows=()
declare -A rps p99s redis_us app_us runs_rate runs_p50 runs_p99 runs_cmds runs_redis_us runs_app_us
# measure NAME SERVER_PID URL [COOKIE_FILE]: one wrk run of one workload;
# adds its req/s, p50 and p99 (ms), Redis commands per request, and Redis
# and server CPU per request (us) to NAME's lists.
measure() {
  local name=$1 server=$2 url=$3 cookies=${4:-}
  local script=scripts/bench/sessions.lua
  [ "${url##*/}" = login ] && script=scripts/bench/login.lua
  local args=(-t"$wrk_threads" -c"$connections" --latency -s "$script" "$url")
  [ -n "$cookies" ] && args+=(-- "$cookies")
  wrk -d"$warmup" "${args[@]}" >/dev/null # warm the pools, the caches, the CPU
  local before after report redis_before redis_after server_before server_after
  before=$(redis_calls)
  redis_before=$(cpu_ticks "$redis_pid")
  server_before=$(cpu_ticks "$server")
  report=$(wrk -d"$duration" "${args[@]}")
  server_after=$(cpu_ticks "$server")
  redis_after=$(cpu_ticks "$redis_pid")
  after=$(redis_calls)
  local requests rate p50 p99 errors
  requests=$(awk '/requests in/ {print $1}' <<<"$report")
  rate=$(awk '/^Requests\/sec/ {print $2}' <<<"$report")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$report")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$report")
  errors=$(awk '/Non-2xx or 3xx responses|Socket errors/ {print}' <<<"$report")
  if [ -n "$errors" ]; then
    echo "error: $name: $errors" >&2
    exit 1
  fi
  local per_request redis_cpu server_cpu
  per_request=$(awk -v d="$((after - before))" -v n="$requests" 'BEGIN {printf "%.2f", d / n}')
  redis_cpu=$(us_per_request "$((redis_after - redis_before))" "$requests")
  server_cpu=$(us_per_request "$((server_after - server_before))" "$requests")
  runs_rate[$name]+="$rate "
  runs_p50[$name]+="$(to_ms "$p50") "
  runs_p99[$name]+="$(to_ms "$p99") "
  runs_cmds[$name]+="$per_request "
  runs_redis_us[$name]+="$redis_cpu "
  runs_app_us[$name]+="$server_cpu "
  printf '  %-52s %10s req/s  p50 %8s  p99 %8s  redis cmds/req %5s  CPU us/req: redis %5s, app %5s\n' \
    "$name" "$rate" "$p50" "$p99" "$per_request" "$redis_cpu" "$server_cpu"
}
median() { # median of the numbers in $1
  tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g |
    awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# summarize NAME: the medians of NAME's runs, as one row of the table.
summarize() {
  local name=$1 rate p50 p99 cmds
  rate=$(median "${runs_rate[$name]}")
  p50=$(median "${runs_p50[$name]}")
  p99=$(median "${runs_p99[$name]}")
  cmds=$(median "${runs_cmds[$name]}")
  rps[$name]=$rate
  p99s[$name]=$p99
  redis_us[$name]=$(median "${runs_redis_us[$name]}")
  app_us[$name]=$(median "${runs_app_us[$name]}")
  rows+=("$name|$rate|${redis_us[$name]}|${app_us[$name]}|${p50}ms|${p99}ms|$cmds|${runs_rate[$name]% }")
}
# run NAME SERVER_PID URL [COOKIE_FILE]: `rounds` runs of one workload, summarized.
run() {
  for ((round = 1; round <= rounds; round++)); do measure "$@"; done
  summarize "$1"
}
to_ms() { # wrk prints 1.23ms, 456.00us or 1.20s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else { sub(/s$/, "", v); print v * 1000 } }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
larger() { awk -v a="$1" -v b="$2" 'BEGIN {print (a >= b ? a : b)}'; }
# verdict MEASURED TARGET: "met" when MEASURED >= TARGET, else "missed".
verdict() { awk -v m="$1" -v t="$2" 'BEGIN {print (m >= t ? "met" : "missed")}'; }

echo "==> workloads: $rounds rounds of wrk -t$wrk_threads -c$connections -d$duration, interleaved; $workers workers per server"
# The names of the GET /count rows that the ranking and the targets use.
floor_name="floor: GET /count, one bare HINCRBY"
ours_existing="ours: GET /count, existing session"
logged_existing="ours, access log on: GET /count, existing session"
actix_existing="peer actix-session: GET /count, existing session"
tower_existing="peer tower-sessions: GET /count, existing session"
ours_new="ours: GET /count, new session"
actix_new="peer actix-session: GET /count, new session"
tower_new="peer tower-sessions: GET /count, new session"
workloads=(
  "ceiling: GET /count, no Redis|$ceiling_pid|http://127.0.0.1:$ceiling_port/count|"
  "$floor_name|$floor_pid|http://127.0.0.1:$floor_port/count|$dir/ours.cookies"
  "$ours_existing|$app_pid|http://127.0.0.1:$app_port/count|$dir/ours.cookies"
  "$actix_existing|$peer_pid|http://127.0.0.1:$peer_port/count|$dir/peer.cookies"
  "$tower_existing|$tower_pid|http://127.0.0.1:$tower_port/count|$dir/tower.cookies"
  "$logged_existing|$logged_pid|http://127.0.0.1:$logged_port/count|$dir/ours.cookies"
  "$ours_new|$app_pid|http://127.0.0.1:$app_port/count|"
  "$actix_new|$peer_pid|http://127.0.0.1:$peer_port/count|"
  "$tower_new|$tower_pid|http://127.0.0.1:$tower_port/count|"
  "ours: GET /healthz with a session cookie|$app_pid|http://127.0.0.1:$app_port/healthz|$dir/ours.cookies"
  # The same request bytes as ours (the ceiling ignores the cookie), so the
  # ratio measures the layers alone: the cookie costs wrk a Lua table per
  # request and the server a longer header to parse, on either side.
  "ceiling: GET /healthz with the same cookie|$ceiling_pid|http://127.0.0.1:$ceiling_port/healthz|$dir/ours.cookies"
  "ceiling: GET /healthz, no cookie|$ceiling_pid|http://127.0.0.1:$ceiling_port/healthz|"
  # Protection at rest: the same reads and writes, plain and sealed.
  "ours: GET /me, signed in|$app_pid|http://127.0.0.1:$app_port/me|$dir/signed_in.cookies"
  "ours, sealed: GET /me, signed in|$sealed_pid|http://127.0.0.1:$sealed_port/me|$dir/sealed.cookies"
  "ours: POST /login, a new user each|$app_pid|http://127.0.0.1:$app_port/login|"
  "ours, sealed: POST /login, a new user each|$sealed_pid|http://127.0.0.1:$sealed_port/login|"
)
for ((round = 1; round <= rounds; round++)); do
  echo "  round $round of $rounds"
  for workload in "${workloads[@]}"; do
    IFS='|' read -r name server url cookies <<<"$workload"
    measure "$name" "$server" "$url" $cookies
  done
done
for workload in "${workloads[@]}"; do summarize "${workload%%|*}"; done

ceiling=${rps["ceiling: GET /count, no Redis"]}
floor=${rps[$floor_name]}
existing=${rps[$ours_existing]}
fresh=${rps[$ours_new]}
untouched=${rps["ours: GET /healthz with a session cookie"]}
# The faster peer of each GET /count workload.
best_existing=$(larger "${rps[$actix_existing]}" "${rps[$tower_existing]}")
best_new=$(larger "${rps[$actix_new]}" "${rps[$tower_new]}")

echo "==> Redis memory per session ($memory_sessions one-field sessions, as the app writes them)"
rcli flushall >/dev/null
memory_before=$(rcli info memory | awk -F: '/^used_memory:/ {print $2+0}')
batch=50000
for ((first = 0; first < memory_sessions; first += batch)); do
  n=$((memory_sessions - first < batch ? memory_sessions - first : batch))
  rcli --eval scripts/bench/populate.lua , "$first" "$n" >/dev/null
done
memory_after=$(rcli info memory | awk -F: '/^used_memory:/ {print $2+0}')
bytes_per_session=$(((memory_after - memory_before) / memory_sessions))
sid=$(python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" 1 | cut -d= -f2)
encoding=$(rcli object encoding "sid_$sid")
memory_usage=$(rcli memory usage "sid_$sid")
echo "  $bytes_per_session bytes per session (INFO used_memory delta / $memory_sessions); one app-written session: MEMORY USAGE $memory_usage bytes, encoding $encoding"

echo "==> scaling: $live_sessions vs $big_population sessions in Redis, and the app's RSS"
rcli flushall >/dev/null
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$live_sessions" >"$dir/ours.cookies"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$app_pid/status"; }
rss_start=$(rss)
run "ours: existing, $live_sessions sessions in Redis" "$app_pid" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
small_rps=${rps["ours: existing, $live_sessions sessions in Redis"]}
small_p99=${p99s["ours: existing, $live_sessions sessions in Redis"]}
for ((first = 0; first < big_population; first += batch)); do
  n=$((big_population - first < batch ? big_population - first : batch))
  rcli --eval scripts/bench/populate.lua , "$first" "$n" >/dev/null
done
echo "  Redis now holds $(rcli dbsize) keys"
rss_samples="$dir/rss"
(while kill -0 "$app_pid" 2>/dev/null; do rss >>"$rss_samples"; sleep 0.5; done) &
pids+=($!)
run "ours: existing, $big_population more sessions in Redis" "$app_pid" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
big_rps=${rps["ours: existing, $big_population more sessions in Redis"]}
big_p99=${p99s["ours: existing, $big_population more sessions in Redis"]}
rss_min=$(sort -n "$rss_samples" | head -1)
rss_max=$(sort -n "$rss_samples" | tail -1)
rss_end=$(rss)
big_dbsize=$(rcli dbsize)
# The small population again, after the big one is gone, so that a machine
# that got slower (or faster) during the run does not pass for a scaling effect.
for ((first = 0; first < big_population; first += batch)); do
  n=$((big_population - first < batch ? big_population - first : batch))
  rcli eval "for n = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1 do redis.call('UNLINK', 'sid_bench-' .. n) end return 1" 0 "$first" "$n" >/dev/null
done
run "ours: existing, $live_sessions sessions in Redis, again" "$app_pid" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
small_rps=$(awk -v a="$small_rps" -v b="${rps["ours: existing, $live_sessions sessions in Redis, again"]}" 'BEGIN {printf "%.2f", (a + b) / 2}')
small_p99=$(awk -v a="$small_p99" -v b="${p99s["ours: existing, $live_sessions sessions in Redis, again"]}" 'BEGIN {printf "%.3f", (a + b) / 2}')
echo "  app RSS: ${rss_start} kB before, ${rss_min}..${rss_max} kB under load with $big_dbsize sessions, ${rss_end} kB after"

# ranking BEST_PEER NAME...: the rows of the ranking table for one GET
# /count workload, fastest first. The last column is the row's req/s over
# BEST_PEER's, on ours' rows and on the floor's (the most a Redis-backed
# layer could reach).
ranking() {
  local best=$1 name against
  shift
  for name in "$@"; do
    against=""
    case "$name" in ours*|floor*) against="$(ratio "${rps[$name]}" "$best")x" ;; esac
    echo "${rps[$name]}|| $name | ${rps[$name]} | ${p99s[$name]}ms | ${redis_us[$name]} | ${app_us[$name]} | $against |"
  done | sort -t'|' -k1,1gr | cut -d'|' -f2-
}
# target WHAT MEASURED TARGET: one verdict row.
target() { echo "| $1 | $2 | >= $3 | $(verdict "$2" "$3") |"; }

report() {
  echo "# Benchmark: $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')"
  echo
  echo "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), wrk -t$wrk_threads -c$connections -d$duration (after a $warmup warm-up) per run, $rounds rounds interleaved, medians shown; $workers workers per server, everything on 127.0.0.1. Ratios are within this one run. CPU per request: utime + stime of the server process and of redis-server over each run, over the requests completed in it (1 tick = $((1000000 / clk_tck)) us)."
  echo
  echo "## GET /count: ours, the peers and the floor, fastest first"
  echo
  echo "| workload | req/s | p99 | Redis µs/req | app µs/req | ours ÷ best peer |"
  echo "|---|---|---|---|---|---|"
  ranking "$best_existing" "$ours_existing" "$logged_existing" "$actix_existing" "$tower_existing" "$floor_name"
  ranking "$best_new" "$ours_new" "$actix_new" "$tower_new" "$floor_name"
  echo
  echo "On the floor's rows the last column is the floor ÷ the faster peer: the most any Redis-backed session layer could reach on this machine."
  echo
  echo "## The targets of issue 16"
  echo
  echo "| what | measured | target | verdict |"
  echo "|---|---|---|---|"
  target "existing session: ours ÷ the faster peer" "$(ratio "$existing" "$best_existing")" 1.2
  target "new session: ours ÷ the faster peer" "$(ratio "$fresh" "$best_new")" 1.0
  target "existing session: ours ÷ the floor (one bare HINCRBY)" "$(ratio "$existing" "$floor")" 0.8
  target "new session: ours ÷ the floor (one bare HINCRBY)" "$(ratio "$fresh" "$floor")" 0.8
  target "existing session: access log on ÷ off" "$(ratio "${rps[$logged_existing]}" "$existing")" 0.95
  echo
  echo "## Every workload"
  echo
  echo "| workload | req/s (median) | Redis µs/req | app µs/req | p50 | p99 | Redis cmds/req | vs ceiling | vs best peer | req/s of each round |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  local row name rate redis app p50 p99 cmds each vs_peer
  for row in "${rows[@]}"; do
    IFS='|' read -r name rate redis app p50 p99 cmds each <<<"$row"
    vs_peer=""
    case "$name" in
      "$ours_existing" | "$logged_existing") vs_peer="$(ratio "$rate" "$best_existing")x" ;;
      "$ours_new") vs_peer="$(ratio "$rate" "$best_new")x" ;;
    esac
    echo "| $name | $rate | $redis | $app | $p50 | $p99 | $cmds | $(ratio "$rate" "$ceiling") | $vs_peer | $each |"
  done
  echo
  echo "| check | measured |"
  echo "|---|---|"
  echo "| (bound) the floor, one bare HINCRBY: vs the faster peer (existing, new), vs ceiling | $(ratio "$floor" "$best_existing")x, $(ratio "$floor" "$best_new")x, $(ratio "$floor" "$ceiling") |"
  echo "| untouched route within 5% of the ceiling's /healthz, same cookie | $(ratio "$untouched" "${rps["ceiling: GET /healthz with the same cookie"]}") (no cookie to the ceiling: $(ratio "$untouched" "${rps["ceiling: GET /healthz, no cookie"]}")) |"
  echo "| sealed (encrypted) vs plain: GET /me, signed in; aim >= 0.90 | $(ratio "${rps["ours, sealed: GET /me, signed in"]}" "${rps["ours: GET /me, signed in"]}") |"
  echo "| sealed (encrypted) vs plain: POST /login; aim >= 0.90 | $(ratio "${rps["ours, sealed: POST /login, a new user each"]}" "${rps["ours: POST /login, a new user each"]}") |"
  echo "| p99 existing session <= 3x ceiling p99 | $(ratio "${p99s[$ours_existing]}" "${p99s["ceiling: GET /count, no Redis"]}")x |"
  echo "| Redis memory per one-field session | $bytes_per_session bytes (MEMORY USAGE of one: $memory_usage, $encoding) |"
  echo "| app RSS, load with $big_dbsize sessions in Redis | ${rss_start} kB before, ${rss_min}..${rss_max} kB during, ${rss_end} kB after |"
  echo "| req/s, $big_population vs $live_sessions sessions in Redis (the latter: mean of before and after) | $(ratio "$big_rps" "$small_rps") |"
  echo "| p99, $big_population vs $live_sessions sessions in Redis (the latter: mean of before and after) | $(ratio "$big_p99" "$small_p99") |"
}
echo
report | tee "$dir/report.md"
if [ -n "$out" ]; then
  cp "$dir/report.md" "$out"
  echo "==> report written to $out"
fi
echo "bench: done"
