#!/usr/bin/env bash
# Browser tests: starts presence-server (under a small supervisor that can restart it and mint tokens) on free
# loopback ports, runs the wasm-bindgen tests in headless Chromium against it, and stops everything on exit.
# Assumes installed: rustup target wasm32-unknown-unknown, wasm-bindgen-cli (wasm-bindgen-test-runner) matching
# the pinned wasm-bindgen, chromium + chromedriver in /usr/bin, node; and a built target/debug/presence-server.
set -euo pipefail
cd "$(dirname "$0")/.."

server_bin="${PRESENCE_SERVER_BIN:-target/debug/presence-server}"
[ -x "$server_bin" ] || { echo "missing $server_bin: run cargo build -p presence-server" >&2; exit 1; }

work="$(mktemp -d)"
supervisor_pid=""
cleanup() {
  if [ -n "$supervisor_pid" ] && kill -0 "$supervisor_pid" 2>/dev/null; then
    kill "$supervisor_pid" 2>/dev/null || true
    wait "$supervisor_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

api_key="test-key-$RANDOM"
node tests/support/supervisor.mjs --server "$server_bin" --db "$work/presence.db" \
  --api-key "$api_key" --api-secret "test-secret-0123456789-$RANDOM" --offline-grace-ms 300 --dev-tokens \
  >"$work/supervisor.log" 2>"$work/server.log" &
supervisor_pid=$!

for _ in $(seq 1 300); do
  grep -q '^supervisor ' "$work/supervisor.log" && break
  kill -0 "$supervisor_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "the supervisor died" >&2; exit 1; }
  sleep 0.1
done
line="$(grep '^supervisor ' "$work/supervisor.log")" || { echo "the server did not start" >&2; exit 1; }
control="$(echo "$line" | awk '{print $2}')"
server="$(echo "$line" | awk '{print $4}')"
echo "server $server, supervisor $control"

export PRESENCE_TEST_SERVER="$server" PRESENCE_TEST_CONTROL="$control" PRESENCE_TEST_API_KEY="$api_key"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-60}"
# The runner reports "no tests to run!" and exits 0 when it finds none, and ignored tests pass silently: compare
# what ran with what the source holds. Arguments (a name filter) narrow the run, then at least one must pass.
expected="$(grep -cE '^[[:space:]]*#\[wasm_bindgen_test[](]' tests/browser.rs || true)"
status=0
timeout "${BROWSER_TEST_TIMEOUT:-900}" cargo test --target wasm32-unknown-unknown -p presence-client --test browser "$@" \
  2>&1 | tee "$work/test.log" || status=$?
if [ "$status" -eq 0 ]; then
  passed="$(grep -Eo '^test result: ok\. [0-9]+ passed' "$work/test.log" | grep -Eo '[0-9]+' | tail -n 1 || true)"
  passed="${passed:-0}"
  if [ $# -eq 0 ] && [ "$passed" -ne "$expected" ]; then
    echo "$passed browser tests passed, but tests/browser.rs has $expected" >&2
    status=1
  elif [ "$passed" -eq 0 ]; then
    echo "no browser test ran" >&2
    status=1
  fi
fi
if [ "$status" -ne 0 ]; then
  echo "--- server log (tail) ---" >&2
  tail -n 40 "$work/server.log" >&2 || true
fi
exit "$status"
