// Queries under load, driven through the Rust load generator (bench/loadgen `queryload`): a fresh server is seeded
// with N users and M channels; idle probe connections time their `health.check` round trips while loopers run
// unpinned queryUsers (range filter, sort on a mixed-type custom field) and queryChannels back to back, and one more
// client loops pinned queryUsers (`id $in` of 30 ids).
// Usage: node bench/queryload.mjs [--users 50000] [--channels 5000] [--probes 50] [--loopers 8] [--secs 30]
//        [--baseline-bin PATH] [--json FILE]
//   --baseline-bin  also run the same load against another presence-server binary, side by side.
//   (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { existsSync, writeFileSync } from 'node:fs';
import { API_KEY, SERVER_BIN, fmt, isMain, parseArgs, serverToken, startServer } from './lib.mjs';
import { LOADGEN_BIN, loadgen } from './fanout.mjs';

async function once(bin, { users, channels, probes, loopers, secs }) {
  const server = await startServer([], bin);
  try {
    return await loadgen(['queryload', '--server', server.url, '--api-key', API_KEY, '--server-token', serverToken(bin),
      '--users', String(users), '--channels', String(channels), '--probes', String(probes),
      '--loopers', String(loopers), '--secs', String(secs)]);
  } finally {
    await server.stop();
  }
}

export async function run({ users = 50_000, channels = 5_000, probes = 50, loopers = 8, secs = 30, baselineBin,
  log = console.log } = {}) {
  if (!existsSync(LOADGEN_BIN)) throw new Error(`no load generator at ${LOADGEN_BIN} (cargo build --release -p presence-loadgen)`);
  const params = { users, channels, probes, loopers, secs };
  const rows = [];
  for (const [name, bin] of [['presence-server', SERVER_BIN], ...(baselineBin ? [['baseline', baselineBin]] : [])]) {
    const result = await once(bin, params);
    log(`queries under load (${name}): health.check p99 ${fmt(result.health_check_ms.p99, 1)} ms, max ${fmt(result.health_check_ms.max, 1)} ms, ${result.closed_4002} closed with 4002, ${fmt(result.queries_per_sec, 1)} queries/s`);
    rows.push({ name, bin, result });
  }
  return { params, rows };
}

export function markdown({ params, rows }) {
  const lines = [
    `${fmt(params.users)} users, ${fmt(params.channels)} channels, ${params.loopers} query loopers, ${params.probes} probes, ${params.secs} s.`,
    '',
    '| server | health.check p50 | p99 | max | probes closed (4002) | unpinned queries/s | unpinned p50 | p99 | pinned p50 | p99 | goal: p99 < 100 ms, no 4002 |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const { name, result: r } of rows) {
    const h = r.health_check_ms;
    const met = h.p99 < 100 && r.closed_4002 === 0;
    lines.push(`| ${name} | ${fmt(h.p50, 1)} ms | **${fmt(h.p99, 1)} ms** | ${fmt(h.max, 1)} ms | ${r.probes_closed} (${r.closed_4002}) | ${fmt(r.queries_per_sec, 1)} | ${fmt(r.query_ms.p50, 1)} ms | ${fmt(r.query_ms.p99, 1)} ms | ${fmt(r.query_ms_by_kind.users_pinned.p50, 1)} ms | ${fmt(r.query_ms_by_kind.users_pinned.p99, 1)} ms | ${met ? 'met' : '**missed**'} |`);
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({
    users: args.users ?? 50_000, channels: args.channels ?? 5_000, probes: args.probes ?? 50,
    loopers: args.loopers ?? 8, secs: args.secs ?? 30, baselineBin: args.baselineBin,
  });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
