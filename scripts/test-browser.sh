#!/usr/bin/env bash
# Browser tests: starts presence-server (under a small supervisor that can restart it and mint tokens) on free
# loopback ports, runs the wasm-bindgen tests in headless Chromium against it, and stops everything on exit.
# Assumes installed: rustup target wasm32-unknown-unknown, wasm-bindgen-cli (wasm-bindgen-test-runner) matching
# the pinned wasm-bindgen, chromium + chromedriver in /usr/bin, node; and a built target/debug/presence-server.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/test-server.sh
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
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
  server_log_tail
fi
exit "$status"
