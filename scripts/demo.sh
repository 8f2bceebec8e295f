#!/usr/bin/env bash
# The two-node demo without Docker: one redis-server, two release app nodes
# (node-1, node-2) and nginx doing round-robin in front, all on 127.0.0.1 on
# free ports. The same topology as docker/docker-compose.yml.
#
#   scripts/demo.sh                    run it; prints the URL; Ctrl-C stops everything
#   scripts/demo.sh --check            run it unattended and assert the behaviour (CI)
#   scripts/demo.sh --check --browser  ... plus the headless-Chromium page test
#
# Everything this script starts is stopped by PID when it exits, however it exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(workspace_root)
cd "$root"

check=false
browser=false
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --browser) browser=true ;;
    *) echo "usage: scripts/demo.sh [--check [--browser]]" >&2; exit 2 ;;
  esac
done

ensure_command redis-server redis-server
ensure_command redis-cli redis-server
ensure_command nginx nginx
ensure_command curl curl
ensure_command python3 python3

echo "==> cargo build --release -p app"
cargo build --release -p app --quiet

dir=$(mktemp -d -t session-demo.XXXXXX)
chmod 755 "$dir" # nginx workers run as nobody and must reach their temp dirs
pids=()
cleanup() { stop_and_clean "$dir" "${pids[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM


wait_for() { # wait_for DESCRIPTION COMMAND...: retry for up to 20 s
  local what=$1
  shift
  for _ in $(seq 1 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: $what did not come up; logs in $dir:" >&2
  tail -n 5 "$dir"/*.log >&2 || true
  exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --logfile "$dir/redis.log" &
pids+=($!)
wait_for "redis-server" redis-cli -p "$redis_port" ping

# Each node serves /metrics on a listener of its own (server.metrics_addr),
# which nginx does not front: operators scrape the nodes, the public only
# reaches the app's routes.
declare -A node_port metrics_port node_pid
for node in node-1 node-2; do
  node_port[$node]=$(free_port)
  metrics_port[$node]=$(free_port)
  # nginx, on 127.0.0.1, is the one trusted proxy: its X-Forwarded-For names
  # the client for the limit on new sessions (default: 1000 at once, then 10 a
  # second per client and node).
  APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=${node_port[$node]} APP__SERVER__NODE_NAME=$node \
    APP__SERVER__METRICS_ADDR=127.0.0.1:${metrics_port[$node]} \
    APP__SERVER__WORKERS=2 APP__REDIS__URL="redis://127.0.0.1:$redis_port" RUST_LOG=warn \
    APP__SERVER__TRUSTED_PROXIES=127.0.0.1 \
    target/release/app >"$dir/$node.log" 2>&1 &
  node_pid[$node]=$!
  pids+=($!)
done
for node in node-1 node-2; do
  wait_for "$node" curl -fsS "http://127.0.0.1:${node_port[$node]}/readyz"
done

lb_port=$(free_port)
# Round-robin over both nodes. Passive health checks: one failed attempt
# (refused, reset, timed out) marks a node down for 30 s, and the request is
# retried on the other node, so a node that dies costs the client nothing.
# GETs are retried; POSTs (logout) are not, as nginx does by default.
# nginx is the edge: X-Forwarded-For is the address it sees, REPLACING whatever
# the client sent. Nothing before the edge is to be believed, and here every
# client is on 127.0.0.1, a trusted address: an appended header would let a
# client name itself.
cat >"$dir/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log $dir/nginx-access.log;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  upstream app {
    server 127.0.0.1:${node_port[node-1]} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:${node_port[node-2]} max_fails=1 fail_timeout=30s;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$lb_port;
    # Metrics are for operators, on each node's metrics listener: never
    # through the public entry point, even from a node that still serves
    # them beside its routes.
    location = /metrics {
      return 404;
    }
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_connect_timeout 1s;
      proxy_next_upstream error timeout http_502;
    }
  }
}
NGINX
nginx -c "$dir/nginx.conf" -p "$dir" &
pids+=($!)
url="http://127.0.0.1:$lb_port"
wait_for "nginx" curl -fsS "$url/healthz"

if ! $check; then
  echo
  echo "Two nodes behind nginx: open $url/ (or: curl -c jar -b jar $url/count)"
  echo "node-1 :${node_port[node-1]}  node-2 :${node_port[node-2]}  redis :$redis_port  logs: $dir"
  echo "metrics: http://127.0.0.1:${metrics_port[node-1]}/metrics (node-1)  http://127.0.0.1:${metrics_port[node-2]}/metrics (node-2)"
  echo "Ctrl-C stops everything."
  wait
  exit 0
fi

# ---- --check: assert the behaviour, unattended --------------------------------
fail() { echo "FAIL: $*" >&2; echo "demo: $passed passed, 1 failed"; exit 1; }
passed=0
jar="$dir/jar"
previous_node=""
count_once() { # count_once EXPECTED: GET /count through nginx with the jar
  local expected=$1 headers status body count node
  headers=$(curl -sS -o "$dir/body" -D - -c "$jar" -b "$jar" -w '%{http_code}' "$url/count")
  status=${headers##*$'\n'}
  body=$(cat "$dir/body")
  node=$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-served-by" { print $2 }')
  count=$(printf '%s' "$body" | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
  [ "$status" = 200 ] || fail "request $expected: status $status ($body)"
  [ "$count" = "$expected" ] || fail "expected count $expected, got $count"
  echo "  count $count  served by $node"
  passed=$((passed + 1))
  last_node=$node
}

echo "==> 1..10 through the load balancer, alternating nodes"
for i in $(seq 1 10); do
  count_once "$i"
  [ "$last_node" != "$previous_node" ] || fail "request $i: $last_node served twice in a row"
  previous_node=$last_node
done

echo "==> /metrics: refused through nginx and on the nodes' public ports; served on their metrics ports"
status_of() { curl -sS -o /dev/null -w '%{http_code}' "$1"; }
status=$(status_of "$url/metrics")
[ "$status" = 404 ] || fail "/metrics through nginx answered $status, not 404"
for node in node-1 node-2; do
  status=$(status_of "http://127.0.0.1:${node_port[$node]}/metrics")
  [ "$status" = 404 ] || fail "/metrics on $node's public port answered $status, not 404"
  # Each node served some of the counts above: its own series show them.
  curl -fsS "http://127.0.0.1:${metrics_port[$node]}/metrics" >"$dir/metrics-$node" \
    || fail "$node's metrics listener did not answer"
  grep -q '^http_requests_total{.*route="/count".*status="200"' "$dir/metrics-$node" \
    || fail "$node's metrics show no /count: $(head -c 300 "$dir/metrics-$node")"
  echo "  $node: metrics on :${metrics_port[$node]}, 404 on :${node_port[$node]}"
done
echo "  nginx: 404"
passed=$((passed + 1))

if $browser; then
  echo "==> the page in headless Chromium"
  bash scripts/browser-check.sh "$url" || fail "the browser check"
  passed=$((passed + 1))
fi

echo "==> node-1 is killed; the same session carries on through node-2"
kill "${node_pid[node-1]}"
wait "${node_pid[node-1]}" 2>/dev/null || true
for i in $(seq 11 20); do
  count_once "$i"
  [ "$last_node" = node-2 ] || fail "request $i served by $last_node after node-1 died"
done

echo "==> new sessions past the default burst get 429, whatever X-Forwarded-For a client sends nginx"
# node-2 alone: 1000 at once, then 10 a second. Each request claims another
# client; nginx replaces the claim, so they all count against this one.
python3 - "$url/count" <<'PYTHON' || fail "the limit on new sessions through nginx"
import http.client, json, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
started, admitted = time.monotonic(), 0
while True:
    claimed = "203.0.113.%d" % (admitted % 250 + 1)
    connection.request("GET", url.path, headers={"X-Forwarded-For": claimed})
    response = connection.getresponse()
    body = response.read()
    if response.status == 429:
        break
    assert response.status == 200, (response.status, body)
    admitted += 1
    ceiling = 1000 + 10 * (time.monotonic() - started) + 10
    assert admitted <= ceiling, "%d new sessions admitted, none refused" % admitted
retry_after = int(response.getheader("Retry-After", "0"))
error = json.loads(body)["error"]
assert retry_after >= 1 and error == "too_many_new_sessions", (retry_after, body)
print("  %d new sessions admitted, then 429 (Retry-After: %d, %s)" % (admitted, retry_after, error))
PYTHON
passed=$((passed + 1))

echo "==> teardown"
started=("${pids[@]}")
cleanup
pids=()
for pid in "${started[@]}"; do
  if kill -0 "$pid" 2>/dev/null; then fail "pid $pid is still running after teardown"; fi
done
passed=$((passed + 1))
echo "demo: $passed passed, 0 failed"
