#!/usr/bin/env bash
# The benchmark: our app against its ceiling (a bare actix-web handler, no
# Redis), its peer (actix-session with its Redis store) and the floor (one
# bare HINCRBY per request: what any Redis-backed session must at least do),
# side by side in ONE run on this machine, with wrk on 127.0.0.1. Each
# workload runs in several rounds, interleaved with the others, and the
# median is reported: the machine is shared, and one run of a workload can be
# 10-30% off.
#
#   scripts/bench.sh                 the full run (about 5 minutes)
#   scripts/bench.sh --smoke         1-second runs and small populations: CI checks it still runs
#   scripts/bench.sh --out FILE      also write the report (markdown) to FILE
#
# Prints one table (workload, req/s, p50, p99, Redis commands per request,
# ratios), then Redis memory per session, the app's RSS under load, and the
# scaling check (1,000 vs 1,000,000 sessions in Redis).
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
# Workers for every server: the same for all three, so the comparison is fair.
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
pids+=($!)
rcli() { redis-cli -p "$redis_port" "$@"; }
wait_for redis rcli ping

app_port=$(free_port); peer_port=$(free_port); ceiling_port=$(free_port); floor_port=$(free_port)
sealed_port=$(free_port)
APP__REDIS__URL="redis://127.0.0.1:$redis_port" APP__SERVER__PORT=$app_port \
  APP__SERVER__WORKERS=$workers APP__SERVER__ACCESS_LOG=false RUST_LOG=warn \
  "$app_bin" >"$dir/app.log" 2>&1 &
app_pid=$!
pids+=($app_pid)
# The same app with session values encrypted at rest (a random bench key)
# and its own key prefix: the cost of encryption, in this run.
APP__REDIS__URL="redis://127.0.0.1:$redis_port" APP__SERVER__PORT=$sealed_port \
  APP__SERVER__WORKERS=$workers APP__SERVER__ACCESS_LOG=false RUST_LOG=warn \
  APP__SESSION__ENCRYPTION__KEYS="bench:$(head -c 32 /dev/urandom | base64)" \
  APP__STORE__KEY_PREFIX=sealed_sid_ \
  "$app_bin" >"$dir/sealed.log" 2>&1 &
pids+=($!)
REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$peer_port WORKERS=$workers \
  "$peer_bin" >"$dir/peer.log" 2>&1 &
pids+=($!)
PORT=$ceiling_port WORKERS=$workers "$ceiling_bin" >"$dir/ceiling.log" 2>&1 &
pids+=($!)
REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$floor_port WORKERS=$workers \
  "$floor_bin" >"$dir/floor.log" 2>&1 &
pids+=($!)
wait_for app curl -sf "http://127.0.0.1:$app_port/healthz"
wait_for peer curl -sf "http://127.0.0.1:$peer_port/healthz"
wait_for ceiling curl -sf "http://127.0.0.1:$ceiling_port/healthz"
wait_for floor curl -sf "http://127.0.0.1:$floor_port/healthz"
wait_for sealed curl -sf "http://127.0.0.1:$sealed_port/healthz"

echo "==> sessions for the existing-session workloads: $live_sessions on each server"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/count" "$live_sessions" >"$dir/ours.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$peer_port/count" "$live_sessions" >"$dir/peer.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$app_port/login" "$live_sessions" >"$dir/signed_in.cookies"
python3 scripts/bench/make_sessions.py "http://127.0.0.1:$sealed_port/login" "$live_sessions" >"$dir/sealed.cookies"

# Total Redis commands executed so far (INFO commandstats, script-internal
# commands included), and EVAL/EVALSHA calls alone.
redis_calls() {
  rcli info commandstats | awk -F'[:=,]' '/^cmdstat_/ {n += $3} END {print n + 0}'
}

rows=()
declare -A rps p99s runs_rate runs_p50 runs_p99 runs_cmds
# measure NAME URL [COOKIE_FILE]: one wrk run of one workload; adds its
# req/s, p50 and p99 (ms) and Redis commands per request to NAME's lists.
measure() {
  local name=$1 url=$2 cookies=${3:-}
  local script=scripts/bench/sessions.lua
  [ "${url##*/}" = login ] && script=scripts/bench/login.lua
  local args=(-t"$wrk_threads" -c"$connections" --latency -s "$script" "$url")
  [ -n "$cookies" ] && args+=(-- "$cookies")
  wrk -d"$warmup" "${args[@]}" >/dev/null # warm the pools, the caches, the CPU
  local before after report
  before=$(redis_calls)
  report=$(wrk -d"$duration" "${args[@]}")
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
  local per_request
  per_request=$(awk -v d="$((after - before))" -v n="$requests" 'BEGIN {printf "%.2f", d / n}')
  runs_rate[$name]+="$rate "
  runs_p50[$name]+="$(to_ms "$p50") "
  runs_p99[$name]+="$(to_ms "$p99") "
  runs_cmds[$name]+="$per_request "
  printf '  %-44s %10s req/s  p50 %8s  p99 %8s  redis cmds/req %s\n' "$name" "$rate" "$p50" "$p99" "$per_request"
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
  rows+=("$name|$rate|${p50}ms|${p99}ms|$cmds|${runs_rate[$name]% }")
}
# run NAME URL [COOKIE_FILE]: `rounds` runs of one workload, summarized.
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

echo "==> workloads: $rounds rounds of wrk -t$wrk_threads -c$connections -d$duration, interleaved; $workers workers per server"
workloads=(
  "ceiling: GET /count, no Redis|http://127.0.0.1:$ceiling_port/count|"
  "floor: GET /count, one bare HINCRBY|http://127.0.0.1:$floor_port/count|$dir/ours.cookies"
  "ours: GET /count, existing session|http://127.0.0.1:$app_port/count|$dir/ours.cookies"
  "peer: GET /count, existing session|http://127.0.0.1:$peer_port/count|$dir/peer.cookies"
  "ours: GET /count, new session|http://127.0.0.1:$app_port/count|"
  "peer: GET /count, new session|http://127.0.0.1:$peer_port/count|"
  "ours: GET /healthz with a session cookie|http://127.0.0.1:$app_port/healthz|$dir/ours.cookies"
  # The same request bytes as ours (the ceiling ignores the cookie), so the
  # ratio measures the layers alone: the cookie costs wrk a Lua table per
  # request and the server a longer header to parse, on either side.
  "ceiling: GET /healthz with the same cookie|http://127.0.0.1:$ceiling_port/healthz|$dir/ours.cookies"
  "ceiling: GET /healthz, no cookie|http://127.0.0.1:$ceiling_port/healthz|"
  # Protection at rest: the same reads and writes, plain and sealed.
  "ours: GET /me, signed in|http://127.0.0.1:$app_port/me|$dir/signed_in.cookies"
  "ours, sealed: GET /me, signed in|http://127.0.0.1:$sealed_port/me|$dir/sealed.cookies"
  "ours: POST /login, a new user each|http://127.0.0.1:$app_port/login|"
  "ours, sealed: POST /login, a new user each|http://127.0.0.1:$sealed_port/login|"
)
for ((round = 1; round <= rounds; round++)); do
  echo "  round $round of $rounds"
  for workload in "${workloads[@]}"; do
    IFS='|' read -r name url cookies <<<"$workload"
    measure "$name" "$url" $cookies
  done
done
for workload in "${workloads[@]}"; do summarize "${workload%%|*}"; done

ceiling=${rps["ceiling: GET /count, no Redis"]}
floor=${rps["floor: GET /count, one bare HINCRBY"]}
existing=${rps["ours: GET /count, existing session"]}
fresh=${rps["ours: GET /count, new session"]}
untouched=${rps["ours: GET /healthz with a session cookie"]}

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
run "ours: existing, $live_sessions sessions in Redis" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
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
run "ours: existing, $big_population more sessions in Redis" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
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
run "ours: existing, $live_sessions sessions in Redis, again" "http://127.0.0.1:$app_port/count" "$dir/ours.cookies"
small_rps=$(awk -v a="$small_rps" -v b="${rps["ours: existing, $live_sessions sessions in Redis, again"]}" 'BEGIN {printf "%.2f", (a + b) / 2}')
small_p99=$(awk -v a="$small_p99" -v b="${p99s["ours: existing, $live_sessions sessions in Redis, again"]}" 'BEGIN {printf "%.3f", (a + b) / 2}')
echo "  app RSS: ${rss_start} kB before, ${rss_min}..${rss_max} kB under load with $big_dbsize sessions, ${rss_end} kB after"

report() {
  echo "# Benchmark: $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')"
  echo
  echo "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), wrk -t$wrk_threads -c$connections -d$duration (after a $warmup warm-up) per run, $rounds rounds interleaved, medians shown; $workers actix workers per server, everything on 127.0.0.1. Ratios are within this one run."
  echo
  echo "| workload | req/s (median) | p50 | p99 | Redis cmds/req | vs ceiling | vs peer | req/s of each round |"
  echo "|---|---|---|---|---|---|---|---|"
  local row name rate p50 p99 cmds each vs_peer
  for row in "${rows[@]}"; do
    IFS='|' read -r name rate p50 p99 cmds each <<<"$row"
    vs_peer=""
    case "$name" in
      "ours: GET /count, existing session") vs_peer="$(ratio "$rate" "${rps["peer: GET /count, existing session"]}")x" ;;
      "ours: GET /count, new session") vs_peer="$(ratio "$rate" "${rps["peer: GET /count, new session"]}")x" ;;
    esac
    echo "| $name | $rate | $p50 | $p99 | $cmds | $(ratio "$rate" "$ceiling") | $vs_peer | $each |"
  done
  echo
  echo "| target | measured |"
  echo "|---|---|"
  echo "| existing session >= 1.8x peer | $(ratio "$existing" "${rps["peer: GET /count, existing session"]}")x |"
  echo "| existing session >= 70% of ceiling | $(ratio "$existing" "$ceiling") |"
  echo "| (bound) the floor, one bare HINCRBY: vs peer, vs ceiling | $(ratio "$floor" "${rps["peer: GET /count, existing session"]}")x, $(ratio "$floor" "$ceiling") |"
  echo "| existing session vs the floor | $(ratio "$existing" "$floor") |"
  echo "| new session >= 1.3x peer | $(ratio "$fresh" "${rps["peer: GET /count, new session"]}")x |"
  echo "| new session, aim 60% of ceiling | $(ratio "$fresh" "$ceiling") |"
  echo "| untouched route within 5% of the ceiling's /healthz, same cookie | $(ratio "$untouched" "${rps["ceiling: GET /healthz with the same cookie"]}") (no cookie to the ceiling: $(ratio "$untouched" "${rps["ceiling: GET /healthz, no cookie"]}")) |"
  echo "| sealed (encrypted) vs plain: GET /me, signed in; aim >= 0.90 | $(ratio "${rps["ours, sealed: GET /me, signed in"]}" "${rps["ours: GET /me, signed in"]}") |"
  echo "| sealed (encrypted) vs plain: POST /login; aim >= 0.90 | $(ratio "${rps["ours, sealed: POST /login, a new user each"]}" "${rps["ours: POST /login, a new user each"]}") |"
  echo "| p99 existing session <= 3x ceiling p99 | $(ratio "${p99s["ours: GET /count, existing session"]}" "${p99s["ceiling: GET /count, no Redis"]}")x |"
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
