#!/usr/bin/env bash
# Runs node's test runner over test files and fails unless exactly the tests they declare ran and passed: every
# line that starts a test (`test(` or `it(`, indented or not) counts, so a suite that silently runs fewer tests —
# a skipped file, a test never registered — fails as surely as a failing one.
# Usage: bash scripts/node-tests.sh SUITE_TIMEOUT_SECS TEST_TIMEOUT_MS FILE_OR_DIR...
set -euo pipefail
cd "$(dirname "$0")/.."

suite_timeout=$1
test_timeout=$2
shift 2
files=()
for arg in "$@"; do
  if [ -d "$arg" ]; then
    while IFS= read -r f; do files+=("$f"); done < <(find "$arg" -maxdepth 1 -name '*.test.mjs' | sort)
  else
    files+=("$arg")
  fi
done
[ "${#files[@]}" -gt 0 ] || { echo "node-tests.sh: no test files in $*" >&2; exit 1; }

expected=$(cat "${files[@]}" | grep -cE '^\s*(test|it)\(' || true)
log=$(mktemp)
status=0
timeout "$suite_timeout" node --test --test-reporter=tap --test-timeout="$test_timeout" "${files[@]}" 2>&1 \
  | tee "$log" || status=$?
count() { grep -E "^# $1 [0-9]+$" "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo 0; }
ran=$(count tests)
passed=$(count pass)
rm -f "$log"
if [ "$status" -ne 0 ]; then
  echo "node-tests.sh: the runner failed (status $status) over ${files[*]}" >&2
  exit "$status"
fi
if [ "$ran" -ne "$expected" ] || [ "$passed" -ne "$expected" ]; then
  echo "node-tests.sh: ${files[*]} declare $expected tests; $ran ran and $passed passed" >&2
  exit 1
fi
echo "node-tests.sh: all $expected declared tests ran and passed"
