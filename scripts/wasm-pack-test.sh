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
source scripts/test-server.sh
status=0
timeout "${BROWSER_TEST_TIMEOUT:-900}" wasm-pack test --headless --chrome "$@" || status=$?
if [ "$status" -ne 0 ]; then
  server_log_tail
fi
exit "$status"
