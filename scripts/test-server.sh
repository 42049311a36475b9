# Sourced by the browser test scripts: starts presence-server under the test supervisor (which can restart it and
# mint tokens) on free loopback ports, exports its address for the tests (PRESENCE_TEST_SERVER,
# PRESENCE_TEST_CONTROL, PRESENCE_TEST_API_KEY, read at compile time) and stops it when the calling script exits.
# Leaves `$work` (a temporary folder, removed on exit) with server.log in it.
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
  --api-key "$api_key" --api-secret "browser-test-secret-$RANDOM-$RANDOM" --offline-grace-ms 300 --dev-tokens \
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

# Prints the tail of the server's log (after a failure).
server_log_tail() {
  echo "--- server log (tail) ---" >&2
  tail -n 40 "$work/server.log" >&2 || true
}
