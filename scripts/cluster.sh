#!/usr/bin/env bash
# A local try-out of cluster mode: builds the server, starts a private Redis and three server processes on
# loopback sharing it (each with its own SQLite file in a temporary folder, or all on one PostgreSQL database with
# --database-url URL), prints their addresses, and stops everything on Ctrl-C.
#
# Usage: bash scripts/cluster.sh [--database-url postgres://...]
# Environment: PRESENCE_API_KEY (demo-key), PRESENCE_API_SECRET (demo-secret-change-me), CLUSTER_BASE_PORT (7080:
# the nodes listen on 7080, 7081, 7082, Redis on 7089); any other PRESENCE_* variable of the server applies too.
set -euo pipefail
cd "$(dirname "$0")/.."

database_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --database-url) database_args=(--database-url "$2"); shift 2 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh --cluster
cargo build --release -p presence-server

export PRESENCE_API_KEY="${PRESENCE_API_KEY:-demo-key}"
export PRESENCE_API_SECRET="${PRESENCE_API_SECRET:-demo-secret-change-me}"
base="${CLUSTER_BASE_PORT:-7080}"
redis_port=$((base + 9))
dir=$(mktemp -d)
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  grep -q "Ready to accept connections" "$dir/redis.log" && break
  sleep 0.1
done
echo "redis:  redis://127.0.0.1:$redis_port"

for i in 0 1 2; do
  db=("--db" "$dir/node$i.db")
  [ ${#database_args[@]} -gt 0 ] && db=("${database_args[@]}")
  target/release/presence-server --addr "127.0.0.1:$((base + i))" --admin-addr off "${db[@]}" \
    --redis-url "redis://127.0.0.1:$redis_port" --node-id "node$i" --dev-tokens >"$dir/node$i.out" 2>"$dir/node$i.err" &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    grep -q "listening on" "$dir/node$i.out" && break
    if ! kill -0 "${pids[$((i + 1))]}" 2>/dev/null; then
      echo "cluster.sh: node$i did not start:" >&2
      cat "$dir/node$i.err" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "node$i:  $(grep -o 'http://[0-9.:]*' "$dir/node$i.out" | head -1)   (logs: $dir/node$i.err)"
done
echo "API key $PRESENCE_API_KEY; dev tokens accepted. Ctrl-C stops everything."
wait
