#!/usr/bin/env bash
# Drives the demo page in headless Chromium through Selenium (PyPI), against
# the load balancer URL given as $1. Called by `scripts/demo.sh --check --browser`.
#
# Installs Debian's chromium and chromium-driver when missing (as root), and
# selenium into a virtualenv under target/. The screenshot lands in
# target/demo-artifacts/page.png and its path is printed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(workspace_root)
url=${1:?usage: scripts/browser-check.sh http://127.0.0.1:PORT}

ensure_command chromium chromium
ensure_command chromedriver chromium-driver

venv="$root/target/browser-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  echo "==> installing selenium into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'selenium>=4.20,<5'
fi

mkdir -p "$root/target/demo-artifacts"
"$venv/bin/python" "$root/scripts/browser_check.py" "$url" "$root/target/demo-artifacts/page.png"
