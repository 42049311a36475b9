#!/usr/bin/env bash
# The client's browser tests through wasm-pack: `wasm-pack test --headless --chrome`, with what it needs here.
# Starts presence-server under the test supervisor on free loopback ports (as scripts/test-browser.sh does) and
# hands the tests its address (PRESENCE_TEST_SERVER, PRESENCE_TEST_CONTROL, PRESENCE_TEST_API_KEY, read at compile
# time); Debian's chromedriver and the wasm-bindgen CLI must be on PATH, or wasm-pack tries to download them.
# Extra arguments go to `wasm-pack test` (e.g. `-- --test browser`). Stops the server on exit.
# Assumes installed: wasm-pack (`bash scripts/setup.sh --wasm-pack`), the rest as for scripts/test-browser.sh,
# and a built target/debug/presence-server.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wasm-pack >/dev/null || { echo "missing wasm-pack: run bash scripts/setup.sh --wasm-pack" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "missing chromedriver on PATH (apt-get install chromium-driver)" >&2; exit 1; }
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
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-60}"
status=0
timeout "${BROWSER_TEST_TIMEOUT:-900}" wasm-pack test --headless --chrome "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (tail) ---" >&2
  tail -n 40 "$work/server.log" >&2 || true
fi
exit "$status"
