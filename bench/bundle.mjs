// Bundle size: what each presence/realtime client costs a web page, bundled the same way.
// Each library gets an entry that imports (and re-exports) its client class, bundled with esbuild
// (`--bundle --minify --format=esm`, platform browser) and compressed with `gzip -9`. Ours is the published package:
// the glue bundled the same way plus the .wasm file it fetches (gzip -9 each, summed).
// Usage: node bench/bundle.mjs [--json FILE]   (needs pkg/: bash scripts/build-wasm.sh)
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as esbuild from 'esbuild';
import { ROOT, fmt, isMain, parseArgs, pinnedVersion } from './lib.mjs';

/** The libraries compared: name, what the entry imports, the npm package whose version is reported. */
export const LIBRARIES = [
  { name: 'presence-client (ours)', pkg: null, entry: `export { default, Client } from ${JSON.stringify(join(ROOT, 'pkg', 'presence_client.js'))};` },
  { name: 'stream-chat', pkg: 'stream-chat', entry: "export { StreamChat } from 'stream-chat';" },
  { name: 'ably (modular: realtime + presence)', pkg: 'ably', entry: "export { BaseRealtime, WebSocketTransport, FetchRequest, RealtimePresence } from 'ably/modular';" },
  { name: 'pubnub', pkg: 'pubnub', entry: "export { default as PubNub } from 'pubnub';" },
  { name: 'centrifuge', pkg: 'centrifuge', entry: "export { Centrifuge } from 'centrifuge';" },
  { name: '@supabase/realtime-js', pkg: '@supabase/realtime-js', entry: "export { RealtimeClient } from '@supabase/realtime-js';" },
  { name: 'phoenix (Socket + Presence)', pkg: 'phoenix', entry: "export { Socket, Presence } from 'phoenix';" },
];

const ownVersion = () => JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

const gzip9 = (bytes) => {
  const out = spawnSync('gzip', ['-9', '-c'], { input: bytes, maxBuffer: 64 << 20 });
  if (out.status !== 0) throw new Error('gzip -9 failed');
  return out.stdout.length;
};

/** Bundles one entry (resolved from the repository root); returns the minified bytes. */
export async function bundle(entrySource) {
  const result = await esbuild.build({
    stdin: { contents: entrySource, resolveDir: ROOT, sourcefile: 'entry.mjs' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].contents;
}

/** Bundles every library and measures it. */
export async function run() {
  const wasmPath = join(ROOT, 'pkg', 'presence_client_bg.wasm');
  if (!existsSync(wasmPath)) throw new Error('no pkg/: run bash scripts/build-wasm.sh');
  const rows = [];
  for (const lib of LIBRARIES) {
    const js = await bundle(lib.entry);
    const row = { name: lib.name, version: lib.pkg ? pinnedVersion(lib.pkg) : ownVersion(), jsMin: js.length, jsGz: gzip9(js), wasmRaw: 0, wasmGz: 0 };
    if (!lib.pkg) {
      const wasm = readFileSync(wasmPath);
      row.wasmRaw = wasm.length;
      row.wasmGz = gzip9(wasm);
    }
    row.totalGz = row.jsGz + row.wasmGz;
    rows.push(row);
  }
  const ours = rows[0].totalGz;
  for (const row of rows) row.vsOurs = row.totalGz / ours;
  return { rows };
}

export function markdown({ rows }) {
  const lines = [
    '| library | version | JS min | wasm | JS + wasm gzip -9 | × ours |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const wasm = r.wasmRaw ? `${fmt(r.wasmRaw)} B (${fmt(r.wasmGz)} gz)` : '–';
    lines.push(`| ${r.name} | ${r.version} | ${fmt(r.jsMin)} B | ${wasm} | **${fmt(r.totalGz)} B** (${fmt(r.totalGz / 1024, 1)} KiB) | ${fmt(r.vsOurs, 2)} |`);
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run();
  console.log(markdown(result));
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
}
