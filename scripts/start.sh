#!/usr/bin/env bash
# The main job: builds the wasm package and the server, runs the server on an embedded SQLite file serving the demo
# page from www/, seeds the demo users and channel, and prints the URLs to open. Stop it with Ctrl-C.
#
# Environment: PRESENCE_ADDR (127.0.0.1:7070), PRESENCE_ADMIN_ADDR (127.0.0.1:7071, /metrics), PRESENCE_DB
# (presence.db), PRESENCE_API_KEY (demo-key), PRESENCE_API_SECRET (demo-secret-change-me); any other PRESENCE_*
# variable of the server applies too.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ -f scripts/build-wasm.sh ]; then
  bash scripts/build-wasm.sh
fi
if [ -f pkg/presence_client.js ]; then
  rm -rf www/pkg && cp -r pkg www/pkg
else
  echo "start.sh: pkg/ has no presence_client.js; the demo page needs the wasm package" >&2
fi
cargo build --release -p presence-server

export PRESENCE_ADDR="${PRESENCE_ADDR:-127.0.0.1:7070}"
export PRESENCE_DB="${PRESENCE_DB:-presence.db}"
export PRESENCE_API_KEY="${PRESENCE_API_KEY:-demo-key}"
export PRESENCE_API_SECRET="${PRESENCE_API_SECRET:-demo-secret-change-me}"

out=$(mktemp)
server_pid=
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

target/release/presence-server --dev-tokens --static-dir www > >(tee "$out") &
server_pid=$!

# Wait (bounded) for the line the server prints once it accepts connections.
url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$out" | head -n 1)
  [ -n "$url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "start.sh: the server exited before listening" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "start.sh: the server did not report its address within 30 s" >&2
  exit 1
fi

node scripts/seed.mjs --base-url "$url" --api-key "$PRESENCE_API_KEY" --api-secret "$PRESENCE_API_SECRET"
# Printed right after the public address, so it is there by now (unless --admin-addr off).
admin_url=$(sed -n 's/^admin listening on \(http:\/\/[^ ]*\).*/\1/p' "$out" | head -n 1)

# The page assumes the key demo-key unless the URL names another one.
key_param=
if [ "$PRESENCE_API_KEY" != demo-key ]; then key_param="&api_key=$PRESENCE_API_KEY"; fi

cat <<EOF

  Demo ready. Open two tabs, one per user:

    $url/?user=alice$key_param
    $url/?user=bob$key_param

  or $url/${key_param:+?${key_param#&}} to pick a user, a status and invisibility before connecting.
  Database: $PRESENCE_DB.${admin_url:+ Metrics (this machine only): $admin_url/metrics.} Stop with Ctrl-C.

EOF

wait "$server_pid"
