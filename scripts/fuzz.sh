#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a time budget each, starting from its seeds and regressions, and fails
# on the first crash (a panic, a broken property, a timeout or an out-of-memory), printing where the reproducer was
# saved. Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]
# Needs the nightly toolchain (on this machine kind's image) and cargo-fuzz (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(filter server_frames client_frames)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is missing (cargo-fuzz needs it)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version "=0.13.2"
fi

# The sanitizer build of the server and its dependencies takes minutes: it is kept outside the checkout, so runs
# from fresh clones on the same machine reuse it.
target_dir=${PRESENCE_FUZZ_TARGET_DIR:-$HOME/.cache/presence-client/fuzz-target}
mkdir -p ../artifacts/fuzz "$target_dir"
# Cargo names a path crate's artifacts by its place in the workspace, the same in every checkout, so the project's
# own crates built from another checkout could be taken for this one's (a build then mixes two versions of the
# protocol crate). When the checkout using the directory changes, those crates are cleaned; the dependencies stay.
here=$(cd .. && pwd)
if [ "$(cat "$target_dir/.checkout" 2>/dev/null)" != "$here" ]; then
  cargo +nightly clean --quiet --target-dir "$target_dir" --release --target x86_64-unknown-linux-gnu \
    -p presence-fuzz -p presence-client -p presence-server -p presence-protocol
  echo "$here" >"$target_dir/.checkout"
fi
if ! cargo +nightly fuzz build --target-dir "$target_dir" >../artifacts/fuzz/build.log 2>&1; then
  echo "fuzz.sh: building the fuzz targets failed; the last lines of artifacts/fuzz/build.log:" >&2
  tail -n 40 ../artifacts/fuzz/build.log >&2
  exit 1
fi
failed=0
for target in "${targets[@]}"; do
  corpus=$(mktemp -d)
  inputs=("seeds/$target")
  [ -d "regressions/$target" ] && inputs+=("regressions/$target")
  log="../artifacts/fuzz/$target.log"
  # -dict: JSON tokens, the protocol's names and the harnesses' commands; -timeout: one input may take 10 s.
  if cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$corpus" "${inputs[@]}" -- \
      -dict=dicts/json.dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    runs=$(grep -a -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo '?')
    echo "fuzz: $target: $runs inputs in ${secs} s, 0 crashes"
  else
    echo "fuzz: $target FAILED; the last lines of $log:" >&2
    tail -n 30 "$log" >&2
    failed=1
  fi
  rm -rf "$corpus"
done
exit "$failed"
