#!/usr/bin/env bash
# The whole test suite: formatting and lints, native tests (wire types, server, client core), the official
# stream-chat SDK against the server, the wasm package build with its size, and the browser tests.
# Installs what is missing first. Every server it starts is stopped again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --browser

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native, all targets)"
cargo clippy --workspace --all-targets -- -D warnings

step "native tests"
cargo test --workspace

step "stream-chat SDK against presence-server"
PRESENCE_SERVER_BIN=target/debug/presence-server timeout 300 node --test --test-timeout=60000 server/tests/sdk/

if [ -x scripts/build-wasm.sh ] || [ -f scripts/build-wasm.sh ]; then
  step "wasm package"
  bash scripts/build-wasm.sh
fi

if [ -f scripts/test-browser.sh ]; then
  step "browser tests (headless Chromium)"
  bash scripts/test-browser.sh
fi
