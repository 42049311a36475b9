#!/usr/bin/env bash
# Builds the API reference (docs/api/, HTML) from the package's types (types/index.d.ts) with TypeDoc, installed in
# docs/tool/ (apart from the workspace: TypeDoc needs TypeScript 5). Fails on any TypeDoc warning: a broken
# {@link}, a type used but not exported.
set -euo pipefail
cd "$(dirname "$0")/../docs/tool"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing TypeDoc (docs/tool)"
  npm ci --no-audit --no-fund
fi
rm -rf ../api
node_modules/.bin/typedoc --options typedoc.json
test -f ../api/index.html && test -f ../api/classes/presence-client.Client.html
test -f ../api/functions/presence-client_react.useUser.html
echo "docs: API reference in docs/api/ ($(find ../api -name '*.html' | wc -l) pages)"
