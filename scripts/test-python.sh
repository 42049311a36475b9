#!/usr/bin/env bash
# The official Python server SDK (stream-chat 4.33.0 from PyPI) against the server: server/tests/python/, run with
# pytest in a private virtualenv made here (target/python-sdk) on first use. Fails unless every test the suite
# declares ran and passed. The tests start and stop their own server (PRESENCE_SERVER_BIN, default
# target/debug/presence-server).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-sdk
wanted=(stream-chat==4.33.0 pytest==9.2.0 websockets==17.4)
if ! "$venv/bin/python" -c 'import stream_chat, pytest, websockets' 2>/dev/null \
  || [ "$("$venv/bin/pip" freeze 2>/dev/null | grep -ciE '^(stream-chat==4\.33\.0|pytest==9\.2\.0|websockets==17\.4)$')" != 3 ]; then
  echo "==> making the Python SDK's virtualenv ($venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${wanted[@]}"
fi

suite=server/tests/python
expected=$(cat "$suite"/test_*.py | grep -cE '^def test_' || true)
log=$(mktemp)
status=0
PRESENCE_SERVER_BIN="${PRESENCE_SERVER_BIN:-target/debug/presence-server}" \
  timeout 300 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$suite" 2>&1 | tee "$log" || status=$?
passed=$(grep -oE '[0-9]+ passed' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
rm -f "$log"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ "$passed" -ne "$expected" ]; then
  echo "test-python.sh: $suite declares $expected tests; $passed passed" >&2
  exit 1
fi
