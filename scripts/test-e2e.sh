#!/usr/bin/env bash
# End-to-end tests in headless Chromium (playwright-core driving /usr/bin/chromium) against the real server: the
# demo page (tests/e2e/presence.test.mjs) and the client package on a test page through leave and return, hidden
# tabs, token expiry, network loss and server evictions (tests/e2e/client.test.mjs). Assumes scripts/setup.sh
# --browser has run. Builds the wasm package when pkg/ is missing and the
# release server when its binary is missing or older than its sources (unless PRESENCE_SERVER_BIN names one);
# the tests start and stop their own servers. tests/e2e/package.test.mjs packs pkg/ into a fresh Vite app and runs it.
# Screenshots: artifacts/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

if [ ! -f pkg/presence_client.js ]; then
  step "building the wasm package"
  bash scripts/build-wasm.sh
fi
rm -rf www/pkg
cp -r pkg www/pkg

# PRESENCE_SERVER_BIN names an already built server (e.g. target/debug/presence-server from the test suite).
bin="${PRESENCE_SERVER_BIN:-}"
if [ -z "$bin" ]; then
  bin=target/release/presence-server
  if [ ! -x "$bin" ] || [ -n "$(find server/src server/Cargo.toml protocol Cargo.lock -newer "$bin" -print -quit)" ]; then
    step "building presence-server (release)"
    cargo build --release -p presence-server
  fi
elif [ ! -x "$bin" ]; then
  echo "test-e2e.sh: PRESENCE_SERVER_BIN=$bin is not an executable" >&2
  exit 1
fi

step "end-to-end tests (headless Chromium)"
PRESENCE_SERVER_BIN="$bin" bash scripts/node-tests.sh 600 180000 tests/e2e/
