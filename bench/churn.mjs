// Churn soak, driven through the Rust load generator (bench/loadgen `churn`): N simulated clients connect,
// disconnect (close 1000 or drop the TCP connection) and go invisible and back (partial update) at random for a
// fixed time, while observers follow all of them (`queryUsers` with `presence: true`, 100 ids per query). After a
// settle time longer than the server's grace window, every observer's view must equal the server's truth (a query
// with a server token), events about a user must arrive in `created_at` order and presence must flip without
// repeats; then every client leaves, the views are compared again, and the server's RSS is read against its
// baseline (observers connected, no clients).
// Usage: node bench/churn.mjs [--clients 2000] [--observers 200] [--secs 60] [--mean-pause-ms 10000] [--seed 1]
//        [--rounds 2] [--json FILE]
//   --rounds  churn rounds on the same server, each ending with every client gone; RSS is read after each, so that
//             memory kept for reuse (flat after the first round) shows apart from a leak (growing).   (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { existsSync, writeFileSync } from 'node:fs';
import { API_KEY, fmt, isMain, parseArgs, serverToken, startServer } from './lib.mjs';
import { LOADGEN_BIN, loadgen } from './fanout.mjs';

/** The server's offline grace window (its default); the settle time must exceed it. */
const GRACE_MS = 3000;

/** Whether a run shows what it should: views converged both times, events in order, presence flips alternate. */
export const verdict = (r) => r.after_churn.converged && r.after_leave.converged && r.out_of_order === 0 && r.repeated_flips === 0;

export async function run({ clients = 2000, observers = 200, secs = 60, meanPauseMs = 10_000, seed = 1, rounds = 2, log = console.log } = {}) {
  if (!existsSync(LOADGEN_BIN)) throw new Error(`no load generator at ${LOADGEN_BIN} (cargo build --release -p presence-loadgen)`);
  const server = await startServer(['--offline-grace-ms', String(GRACE_MS)]);
  let result;
  try {
    result = await loadgen(['churn', '--server', server.url, '--api-key', API_KEY, '--server-token', serverToken(),
      '--pid', String(server.pid), '--clients', String(clients), '--observers', String(observers), '--secs', String(secs),
      '--mean-pause-ms', String(meanPauseMs), '--settle-secs', String(Math.ceil(GRACE_MS / 1000) + 2),
      '--seed', String(seed), '--rounds', String(rounds), '--max-secs', String(rounds * (secs + 120) + 300)]);
  } finally {
    await server.stop();
  }
  const mib = (b) => fmt(b / 1048576, 1);
  log(`churn: ${fmt(clients)} clients, ${observers} observers, ${secs} s: ${fmt(result.events)} events, views ${verdict(result) ? 'converged' : '**not converged**'} (${result.after_churn.differences} + ${result.after_leave.differences} differences, ${result.out_of_order} out of order, ${result.repeated_flips} repeated flips), RSS ${mib(result.rss_before)} → peak ${mib(result.rss_peak)} → ${result.rounds.map((r) => mib(r.rss_after)).join(' / ')} MiB after each round`);
  return { clients, observers, secs, meanPauseMs, seed, rounds, result };
}

const codes = (byCode) => Object.entries(byCode).map(([code, n]) => `${code}: ${n}`).join(', ') || 'none';

/** A comparison's cell: converged, or the differences and observers whose view was still incomplete. */
const compared = (c) => (c.converged ? 'yes' : `**no** (${c.differences} differences${c.observers_incomplete ? `, ${c.observers_incomplete} views incomplete` : ''})`);

export function markdown({ result: r }) {
  const a = r.actions;
  const mib = (b) => `${fmt(b / 1048576, 1)} MiB`;
  return [
    `${fmt(r.clients)} clients, ${r.observers} observers following all of them, ${r.rounds.length} × ${r.secs} s of churn on one server, each round ending with every client gone (seed ${r.seed}; each client acts after a pause uniform in 0–${fmt((2 * r.mean_pause_ms) / 1000, 0)} s): ${fmt(a.connects)} connects, ${fmt(a.closes)} closes (1000), ${fmt(a.drops)} dropped connections, ${fmt(a.invisible_on)} invisible on, ${fmt(a.invisible_off)} off${a.connect_failures + a.update_failures + a.closed_by_server ? `; **${a.connect_failures} failed connects, ${a.update_failures} failed updates, ${a.closed_by_server} connections ended by the server** (close codes ${codes(a.close_codes)})` : ''}.`,
    ...(r.observer_reconnects ? ['', `**${r.observer_reconnects} observer connections ended by the server** (close codes ${codes(r.observer_close_codes)}; 1006: lost without a close frame); each such observer reconnected and followed everyone again.`] : []),
    '',
    '| events to observers | per second | out of order | repeated flips | views = truth after the churn | after everyone left | observer reconnects | RSS baseline | peak | after each round | after − baseline |',
    '|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|',
    `| ${fmt(r.events)} (${fmt(r.presence_events)} presence, ${fmt(r.updated_events)} updated) | ${fmt(r.events_per_sec)} | ${r.out_of_order} | ${r.repeated_flips} | ${compared(r.after_churn)} (${fmt(r.after_churn.online_in_truth)} online) | ${compared(r.after_leave)} | ${r.observer_reconnects} | ${mib(r.rss_before)} | ${mib(r.rss_peak)} | ${r.rounds.map((x) => mib(x.rss_after)).join(' / ')} | **${mib(r.rss_after - r.rss_before)}** |`,
    '',
    'RSS baseline: the observers connected and no client; after each round: every client gone and the settle time passed.',
    'Memory the allocator keeps for reuse shows as an "after" that stays flat from one round to the next; a leak grows it.',
  ].join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({
    clients: args.clients ?? 2000, observers: args.observers ?? 200, secs: args.secs ?? 60,
    meanPauseMs: args.meanPauseMs ?? 10_000, seed: args.seed ?? 1, rounds: args.rounds ?? 2,
  });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
