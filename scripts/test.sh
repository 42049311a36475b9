#!/usr/bin/env bash
# The whole test suite: formatting and lints, native tests (wire types, server, client core), the official
# stream-chat SDK against the server, the wasm package build with its size, the TypeScript types checked against
# the built API, the client's browser tests and the demo's end-to-end tests.
# Installs what is missing first. Every server it starts is stopped again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --browser --cluster

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native, all targets)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo clippy (the client's browser layer, wasm32)"
cargo clippy -p presence-client --target wasm32-unknown-unknown --all-targets -- -D warnings \
  -W clippy::await_holding_refcell_ref

step "module layout of the server (file sizes, import cycles, an engine without IO)"
node scripts/check-layout.mjs server/src src

step "native tests (and every test target ran at least the tests it declares)"
native_log=$(mktemp)
native_status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$native_log" || native_status=$?
[ "$native_status" -eq 0 ] || { rm -f "$native_log"; exit "$native_status"; }
node scripts/test-counts.mjs "$native_log" --workspace || { rm -f "$native_log"; exit 1; }
rm -f "$native_log"

step "fuzz targets, 60 s each (cargo-fuzz, nightly; any crash fails)"
bash scripts/fuzz.sh 60

step "stream-chat SDK against presence-server (one process, then three in cluster mode on a private Redis)"
PRESENCE_SERVER_BIN=target/debug/presence-server bash scripts/node-tests.sh 420 120000 server/tests/sdk/

step "the official Python server SDK (stream-chat 4.33.0) against presence-server (private virtualenv)"
PRESENCE_SERVER_BIN=target/debug/presence-server bash scripts/test-python.sh

step "load generator smoke (bench/loadgen against the server, a few hundred connections)"
cargo build -p presence-loadgen
PRESENCE_SERVER_BIN=target/debug/presence-server PRESENCE_LOADGEN_BIN=target/debug/presence-loadgen \
  timeout 300 node bench/smoke.mjs

step "wasm package (size printed below)"
bash scripts/build-wasm.sh

step "TypeScript types against the API (tsc --strict over types/check.ts and the generated pkg/ types)"
node_modules/.bin/tsc --project types/tsconfig.json

step "API reference (TypeDoc over types/index.d.ts into docs/api/, warnings fail)"
bash scripts/docs.sh

step "browser tests of the client (wasm-bindgen-test, headless Chromium)"
bash scripts/test-browser.sh

step "end-to-end tests of the demo (Playwright, headless Chromium)"
PRESENCE_SERVER_BIN=target/debug/presence-server bash scripts/test-e2e.sh
