#!/usr/bin/env bash
# The main job: builds the server (and the wasm package when present), then runs the server on an embedded
# SQLite file, serving the demo page from www/. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ -f scripts/build-wasm.sh ]; then
  bash scripts/build-wasm.sh
  if [ -d www ]; then
    rm -rf www/pkg && cp -r pkg www/pkg
  fi
fi
cargo build --release -p presence-server

export PRESENCE_ADDR="${PRESENCE_ADDR:-127.0.0.1:7070}"
export PRESENCE_DB="${PRESENCE_DB:-presence.db}"
export PRESENCE_API_KEY="${PRESENCE_API_KEY:-demo-key}"
export PRESENCE_API_SECRET="${PRESENCE_API_SECRET:-demo-secret}"
static=()
[ -d www ] && static=(--static-dir www)
exec target/release/presence-server --dev-tokens "${static[@]}"
