#!/usr/bin/env bash
# Installs what building and testing need, skipping whatever is already there:
# the wasm32 target, the wasm-bindgen CLI matching Cargo.lock, npm packages, (with --browser) Debian's Chromium
# and ChromeDriver, (with --cluster) Debian's PostgreSQL and Redis for the cluster and PostgreSQL tests and strace
# (the storage tests count the server's syncs of the SQLite log), and (with --wasm-pack) wasm-pack, which the
# normal build and tests do not need.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
want_wasm_pack=0
want_cluster=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    --wasm-pack) want_wasm_pack=1 ;;
    --cluster) want_cluster=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }

# apt-get that waits its turn: another install on the machine holds Debian's package lock (the lists lock during
# an update, the dpkg lock during an install) for minutes at a time. dpkg's lock is waited for by apt itself
# (DPkg::Lock::Timeout); the lists lock is not, so a refusal naming a lock is retried for up to 15 minutes.
apt_get() {
  local deadline=$((SECONDS + 900)) log
  log=$(mktemp)
  while true; do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@" >"$log" 2>&1; then
      cat "$log"; rm -f "$log"; return 0
    fi
    if grep -qiE 'could not get lock|unable to lock|unable to acquire' "$log" && [ "$SECONDS" -lt "$deadline" ]; then
      echo "setup.sh: another package install holds the lock; waiting ($(grep -m1 -iE 'lock' "$log"))"
      sleep 5
      continue
    fi
    cat "$log" >&2; rm -f "$log"; return 1
  done
}

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must match the wasm-bindgen crate exactly.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$bindgen_version" ]; then
  echo "setup.sh: cannot read the wasm-bindgen version from Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  step "installing wasm-bindgen-cli $bindgen_version (a few minutes on a fresh machine)"
  # No --locked: the CLI's own lockfile names a crate version the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm packages"
  npm ci --no-audit --no-fund
fi

if [ "$want_browser" = 1 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  step "installing chromium and chromium-driver"
  apt_get update -q
  apt_get install -y -q chromium chromium-driver
fi

if [ "$want_cluster" = 1 ]; then
  missing=()
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v strace >/dev/null || missing+=(strace)
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    apt_get update -q
    apt_get install -y -q "${missing[@]}"
  fi
fi

if [ "$want_wasm_pack" = 1 ] && ! command -v wasm-pack >/dev/null; then
  step "installing wasm-pack (about 2 minutes)"
  cargo install wasm-pack --version "=0.15.1"
fi
