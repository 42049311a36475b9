#!/usr/bin/env bash
# Builds the npm package's wasm and JS glue into pkg/ and prints their size (raw and gzip -9).
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen CLI of the version pinned in Cargo.toml, npm esbuild
# (bundles the entry point with the glue). Optional: npm binaryen's wasm-opt; Debian's binaryen is never used (it
# miscompiles).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --profile wasm-release --target wasm32-unknown-unknown -p presence-client
rm -rf pkg/snippets
# The name section (Rust function names in devtools' wasm stack frames) is not shipped: measured on this build,
# wasm-bindgen without --remove-name-section then wasm-opt -Oz --converge -g gave 70,728 B of gzip against 55,400 B
# without names, +15.3 KB (+28%) for the wasm alone, over the whole budget's headroom.
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir pkg \
  "$target_dir/wasm32-unknown-unknown/wasm-release/presence_client.wasm"

# Optional shrinking with npm tools (binaryen's wasm-opt, esbuild); override their paths with WASM_OPT / ESBUILD.
wasm_opt="${WASM_OPT:-node_modules/.bin/wasm-opt}"
esbuild="${ESBUILD:-node_modules/.bin/esbuild}"
features=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals
  --enable-reference-types --enable-multivalue)
if [ -x "$wasm_opt" ]; then
  "$wasm_opt" -Oz --converge "${features[@]}" pkg/presence_client_bg.wasm -o pkg/presence_client_bg.opt.wasm
  mv pkg/presence_client_bg.opt.wasm pkg/presence_client_bg.wasm
  echo "wasm-opt: npm binaryen applied"
  # Import and export names down to a letter or two (wasm-bindgen's carry 16 hex digits each, written twice);
  # the glue is rewritten to match and checked against the module. The target_features section, which only
  # tools read and wasm-bindgen already has, goes too.
  "$wasm_opt" "${features[@]}" --minify-imports-and-exports-and-modules --strip-target-features \
    pkg/presence_client_bg.wasm -o pkg/presence_client_bg.min.wasm >pkg/names.json
  node scripts/minify-names.mjs pkg/names.json pkg/presence_client_bg.min.wasm pkg/presence_client.js
  mv pkg/presence_client_bg.min.wasm pkg/presence_client_bg.wasm
  rm pkg/names.json
  echo "wasm-opt: import and export names minified"
fi
if [ ! -x "$esbuild" ]; then
  echo "build-wasm.sh: esbuild is missing ($esbuild): run scripts/setup.sh" >&2
  exit 1
fi
# Bundled from npm/entry.js (the glue, started when imported), with the glue's JS snippets (src/web/frames.js, the
# socket's message handler) inlined. Whitespace and syntax are minified but identifiers are not, so classes and functions keep their names in devtools and stack
# traces (`Client`, `Channel`, `EventSubscription` rather than one letter), and lines stay short so a runtime
# that prints the failing line (Node) prints one line, not the whole module. Measured with this script's gzip -9:
# full minification 4,014 B of glue; identifiers kept 4,860 B; and lines ≤ 160 characters 5,087 B (+1,073 B).
# --keep-names on full minification (+721 B) keeps `.name` only, not the class name devtools shows. The source
# map (presence_client.js.map) is read by devtools only, never by the page.
"$esbuild" npm/entry.js --bundle --minify-whitespace --minify-syntax --line-limit=160 --sourcemap \
  --format=esm --log-level=warning --outfile=pkg/presence_client.min.js
mv pkg/presence_client.min.js pkg/presence_client.js
# esbuild binds a bundled class that refers to itself as `var Client = class _Client {...}`, and the class's own
# name (what devtools shows) is then `_Client`. Both bindings are the same class, so the inner one takes the
# public name (a column shift of one character per rename in the source map).
sed -i -E 's/\b_(Client|Channel|EventSubscription)\b/\1/g' pkg/presence_client.js
sed -i 's#sourceMappingURL=presence_client.min.js.map#sourceMappingURL=presence_client.js.map#' pkg/presence_client.js
mv pkg/presence_client.min.js.map pkg/presence_client.js.map
rm -rf pkg/snippets
echo "esbuild: JS glue bundled and minified (names kept, source map)"

# pkg/ is the npm package: its manifest (with the exports map) and README from npm/, the license, and the precise
# TypeScript types (types/index.d.ts); the generated declarations (which types/check-generated.ts compares with
# them) are not published. `npm pack ./pkg` makes the tarball.
rm -f pkg/.gitignore pkg/package.json
cp npm/package.json npm/README.md LICENSE pkg/
cp types/index.d.ts pkg/index.d.ts
# The React bindings ship as written (a short module an app's bundler minifies); they import the glue beside them.
cp npm/react.js pkg/react.js
cp types/react.d.ts pkg/react.d.ts
crate_version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
package_version=$(node -p "require('./npm/package.json').version")
if [ "$crate_version" != "$package_version" ]; then
  echo "npm/package.json version $package_version differs from the crate's $crate_version" >&2
  exit 1
fi

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9 -c "$1" | wc -c | tr -d ' '; }
wasm=pkg/presence_client_bg.wasm
glue=pkg/presence_client.js
# What an app's production bundle pays: the glue bundled by its bundler with what the app imports, minified
# (esbuild --bundle --minify, as bench/bundle.mjs measures every library), plus the wasm. The shipped glue keeps its
# names and short lines for devtools; an app's minifier renames them anyway. The package has no side effects
# (`sideEffects: false`), so an app that does not import createPresenceStore does not ship it: the budget counts
# an app importing `Client`, and the store and the React entry are measured beside it.
measure_dir=$(mktemp -d)
app_bundle() { # $1: the import list; prints the bundle's path
  printf 'export { %s } from "%s";\n' "$1" "$PWD/$glue" >"$measure_dir/entry.js"
  "$esbuild" "$measure_dir/entry.js" --bundle --minify --format=esm --log-level=warning \
    --outfile="$measure_dir/$2.js"
  echo "$measure_dir/$2.js"
}
app_glue=$(app_bundle Client client)
with_store=$(app_bundle 'Client, createPresenceStore' store)
react_min="$measure_dir/react.js"
"$esbuild" pkg/react.js --minify --format=esm --log-level=warning --outfile="$react_min"
total_raw=$(($(size "$wasm") + $(size "$app_glue")))
total_gz=$(($(gz "$wasm") + $(gz "$app_glue")))
printf '%-40s %9s %9s\n' file raw gzip-9
printf '%-40s %9d %9d\n' "$wasm" "$(size "$wasm")" "$(gz "$wasm")"
printf '%-40s %9d %9d\n' "$glue" "$(size "$glue")" "$(gz "$glue")"
printf '%-40s %9d %9d\n' "glue in an app's bundle (Client)" "$(size "$app_glue")" "$(gz "$app_glue")"
printf '%-40s %9d %9d\n' "  + createPresenceStore" "$(($(size "$with_store") - $(size "$app_glue")))" \
  "$(($(gz "$with_store") - $(gz "$app_glue")))"
printf '%-40s %9d %9d\n' "presence-client/react (--minify)" "$(size "$react_min")" "$(gz "$react_min")"
rm -rf "$measure_dir"
# The budget: 59 KiB of gzip for wasm + glue as an app ships them (56 KiB until chrono's `DateTime<Utc>`, 57 KiB
# until tab sharing, 58.5 KiB until one call per batch frame, below),
# about half of stream-chat's 104.5 KB. Measured (this script, gzip -9 of both files): 48,486 B before wire
# timestamps were read and before frames were parsed in JS; the JS frame handler
# (src/web/frames.js, inlined by esbuild) and its reader add 2,340 B. chrono's RFC 3339 parsing (no default
# features) added 7,880 B on its own, most of it core's formatting and Unicode tables that its str-slicing panic
# paths link into a bundle that had none (58,621 B with both); the core's own byte reader (src/core/stamp.rs,
# checked against chrono in its tests) costs a few hundred bytes: 52,921 B. serde + serde-wasm-bindgen decoding the
# app's arguments and the REST answers (into deserialize-only views of the protocol types, no serde_json::Value)
# was measured at +29,779 B on its own: serde-wasm-bindgen's error messages alone link float formatting (serde's
# `Unexpected`), so it stays out of the bundle while the budget holds.
# The user store as a hash table (std HashMap with FNV-1a) rather than a sorted list, so a presence frame's lookup
# is one probe, not about fourteen cache-missing string comparisons among 10,000 users: +1,577 B, 54,498 B.
# The design card's chrono is the core's timestamp type: its `DateTime<Utc>`, built from the byte reader's
# microseconds with `from_timestamp_micros` (src/core/stamp.rs), +640 B (57,246 -> 57,886 B: its calendar from day
# numbers and year tables; built with `NaiveDate::from_ymd_opt` in place of the reader's own calendar, +1,167 B
# against 57,151 B). It is kept under the rule for the card's crates (each kept where it costs <= 2 KB of gzip and
# no ingest regression), and the budget rose by 1 KiB for it, to 57 KiB. Ingest (bench/ingest.mjs, 12 runs of each
# build, alternated; medians): 41.4 -> 39.2 us of main thread per event, 13,893 -> 15,482 events/s (noise either
# way), wasm memory 3,520 -> 2,944 KiB (`Option<DateTime<Utc>>` is 12 bytes, 4-aligned, where `Option<i64>` is 16).
# Tried against 57,151 B and not kept, as none fits the budget beside chrono's `DateTime<Utc>`: chrono formatting
# the `user.presence.changed` event's `created_at` instead of `Date.toISOString`, +1,789 B (58,940 B: core's
# formatting). serde-wasm-bindgen's `to_value` (the serializer only) on `#[derive(Serialize)]` structs for the ping
# frame alone, +1,760 B (58,911 B), and also the `/connect` payload (`user_details` kept as a JS value) and the
# `connection.changed` event, +2,256 B (59,407 B). It links no `Unexpected` or float formatting: the cost is its
# serializer and its cache of object keys (a thread-local HashMap of its own, with a panic path).
# Tab sharing (src/web/share.js: one socket per browser over Web Locks and BroadcastChannel, default on) costs
# +1,479 B against 57,971 B (59,450 B): +1,352 B of glue (the file, bundled), +127 B of wasm (the option, the
# client-local close code). Written against web-sys's bindings instead, the glue for LockManager, BroadcastChannel,
# AbortController and the promise callbacks alone would weigh more than the file, and the link must be a JS object
# the socket code can hold as a WebSocket. Property names minified by hand (esbuild --mangle-props) would save
# 85 B: not done. The budget rose by 1.5 KiB for it, to 58.5 KiB.
# Batched delivery, the wasm side, one call per frame (src/web/frames.js hands a batch's events over at once, with
# a record per event, and the state-change listeners hear once per frame): +300 B (59,712 -> 60,012 B), and a tab
# leaving releasing its subscriptions (share.js: a lock per tab, `bye`, the leader's renewal) +176 B. The budget
# rose by 0.5 KiB for them, to 59 KiB.
budget=60416
printf '%-40s %9d %9d\n' "total in an app (budget $budget gzip)" "$total_raw" "$total_gz"
if [ "$total_gz" -ge "$budget" ]; then
  echo "size budget exceeded: $total_gz bytes gzip >= $budget" >&2
  exit 1
fi
