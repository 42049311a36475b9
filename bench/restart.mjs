// Crash and restart, driven through the Rust load generator (bench/loadgen `restart`): N clients (each reconnecting
// with the client's backoff) and a few observers following all of them, on a server with a file database; some
// clients invisible, some with a status, both set by partial update. The server is killed with SIGKILL and started
// again on the same database and address, at once or after an outage. Reported: every client back by itself, the
// time until all are back, reconnects per second (the largest one-second bucket as a share of the clients; goal
// ≤ 10 %), whether the observers see every visible client online and every invisible one offline, and whether
// what was acknowledged before the crash reads back the same. The restarted server paces the readmission of its
// crowd (its default `--readmit-window-ms`); one more run, without an outage, turns that off for comparison.
// Usage: node bench/restart.mjs [--clients 1000] [--observers 5] [--down-ms 0,10000] [--unpaced true|false]
//        [--seed 1] [--json FILE]
//        (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { API_KEY, API_SECRET, SERVER_BIN, fmt, isMain, parseArgs, serverToken } from './lib.mjs';
import { LOADGEN_BIN, loadgen } from './fanout.mjs';

/** One crash and restart after `downMs` of outage, on a fresh database; `paced` false: without readmission pacing. */
async function once({ clients, observers, downMs, seed, paced }) {
  if (!existsSync(SERVER_BIN)) throw new Error(`no server binary at ${SERVER_BIN} (cargo build --release -p presence-server)`);
  const dir = mkdtempSync(join(tmpdir(), 'presence-restart-'));
  try {
    return await loadgen(['restart', '--server-bin', SERVER_BIN, '--db', join(dir, 'presence.db'),
      '--api-key', API_KEY, '--api-secret', API_SECRET, '--server-token', serverToken(),
      '--clients', String(clients), '--observers', String(observers), '--down-ms', String(downMs),
      '--seed', String(seed), '--max-secs', '300'], { env: paced ? {} : { PRESENCE_READMIT_WINDOW_MS: '0' } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether a run shows what it should: everyone back, the observers converged, nothing lost. */
export const verdict = (r) => r.all_back && r.observers_converged && r.persisted_lost === 0;

/** The reconnects per second after the kill as text bars (seconds without any are folded). */
export function histogram(r) {
  const width = 40;
  const top = Math.max(1, ...r.reconnects_per_sec);
  return r.reconnects_per_sec
    .map((count, second) => ({ count, second }))
    .filter(({ count }) => count > 0)
    .map(({ count, second }) => `${String(second).padStart(3)} s  ${'█'.repeat(Math.max(1, Math.round((count / top) * width)))} ${count} (${fmt((100 * count) / r.clients, 1)} %)`)
    .join('\n');
}

export async function run({ clients = 1000, observers = 5, downs = [0, 10_000], unpaced = true, seed = 1, log = console.log } = {}) {
  if (!existsSync(LOADGEN_BIN)) throw new Error(`no load generator at ${LOADGEN_BIN} (cargo build --release -p presence-loadgen)`);
  const rows = [];
  const runs = downs.map((downMs) => ({ downMs, paced: true }));
  if (unpaced) runs.push({ downMs: 0, paced: false });
  for (const { downMs, paced } of runs) {
    const result = await once({ clients, observers, downMs, seed, paced });
    log(`restart after ${fmt(downMs / 1000, 1)} s down${paced ? '' : ', unpaced'}: ${result.back}/${clients} back, all within ${fmt(result.all_back_ms / 1000, 1)} s of the kill, largest second ${fmt(100 * result.largest_second_share, 1)} % of clients, observers ${result.observers_converged ? 'converged' : `**not converged** (${result.observer_mismatches} differences)`}, ${result.persisted_lost} of ${result.persisted_checked} persisted changes lost`);
    log(`reconnects per second after the kill:\n${histogram(result)}`);
    rows.push({ downMs, paced, result });
  }
  return { clients, observers, seed, rows };
}

export function markdown({ clients, observers, rows }) {
  const lines = [
    `${fmt(clients)} clients, ${observers} observers following all of them.`,
    '',
    '| outage | readmission | server back after | every client back | all back after the kill | after the restart | largest second (goal ≤ 10 %) | observers converged | persisted changes lost |',
    '|---:|---|---:|---|---:|---:|---:|---|---:|',
  ];
  for (const { downMs, paced, result: r } of rows) {
    const share = 100 * r.largest_second_share;
    const goal = paced ? (share <= 10 ? 'met' : '**missed**') : '(comparison)';
    lines.push(`| ${fmt(downMs / 1000, 1)} s | ${paced ? 'paced (default)' : 'unpaced (`--readmit-window-ms 0`)'} | ${fmt(r.restart_ms, 0)} ms | ${r.all_back ? 'yes' : `**no** (${r.back})`} | ${fmt(r.all_back_ms / 1000, 1)} s | ${fmt(r.all_back_after_up_ms / 1000, 1)} s | **${fmt(share, 1)} %** (${r.largest_second}) ${goal} | ${r.observers_converged ? 'yes' : `**no** (${r.observer_mismatches} differences)`} | ${r.persisted_lost} of ${r.persisted_checked} |`);
  }
  lines.push('', 'The restarted server paces the readmission: it counts the users whose stored `last_active` says they may',
    'have been connected when the previous process ended (a connected user\'s stored value is at most one 15-minute',
    'refresh old), and while letting them in would take more than 50 connects a second over its readmission window',
    '(`--readmit-window-ms`, 12 s by default) it answers the connects beyond that pace with 429 (code 9) before the',
    'upgrade. Every client counts that as a failed attempt and retries after its backoff. One dropped tab on a running',
    'server is not paced: its first retry, 250 ms to 2.5 s after the drop, stays inside the 3 s offline grace. What',
    'the pacing costs is the tail: clients refused several times have backed off further, so the last is back later',
    'than without pacing (the unpaced row).');
  for (const { downMs, paced, result: r } of rows) {
    lines.push('', `Reconnects per second after the kill, outage ${fmt(downMs / 1000, 1)} s${paced ? '' : ', unpaced'}:`, '', '```', histogram(r), '```');
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const downs = args.downMs !== undefined ? String(args.downMs).split(',').map(Number) : [0, 10_000];
  const unpaced = String(args.unpaced ?? 'true') !== 'false';
  const result = await run({ clients: args.clients ?? 1000, observers: args.observers ?? 5, downs, unpaced, seed: args.seed ?? 1 });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
