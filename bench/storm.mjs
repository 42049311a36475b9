// The presence storm, batched delivery against one event per frame, driven through the Rust load generator
// (`presence-loadgen storm`): U users flip once each (`invisible` on by `PATCH /users` with a server token, one
// request per user, spread evenly over one second) while W watcher connections each follow all U users
// (`queryUsers` with `presence: true`, 100 ids a query). The watchers connect with `batch_ms=N` (every frame an
// array of events) or without (one event per frame). Each size runs `--rounds` times, both deliveries in each round
// on fresh servers, their order alternating from round to round; the table gives medians over the rounds and the
// medians of the per-round ratios batched ÷ unbatched.
// Usage: node bench/storm.mjs [--sizes 1000x1000,300x1000,50x1000] [--rounds 5] [--batch-ms 10] [--spread-ms 1000]
//        [--json FILE]
//        (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { writeFileSync } from 'node:fs';
import { API_KEY, fmt, isMain, median, parseArgs, serverToken, startServer } from './lib.mjs';
import { loadgen } from './fanout.mjs';

export const FULL = { sizes: [{ users: 1000, watchers: 1000 }, { users: 300, watchers: 1000 }, { users: 50, watchers: 1000 }], rounds: 5, batchMs: 10, spreadMs: 1000 };
export const QUICK = { sizes: [{ users: 300, watchers: 1000 }], rounds: 1, batchMs: 10, spreadMs: 1000 };

/** `1000x1000,300x1000` into sizes. */
export const parseSizes = (text) => String(text).split(',').map((s) => {
  const [users, watchers] = s.split('x').map(Number);
  return { users, watchers };
});

const sizeText = ({ users, watchers }) => `${users}x${watchers}`;

export function command({ sizes, rounds, batchMs, spreadMs }) {
  return `cargo build --release -p presence-server -p presence-loadgen && node bench/storm.mjs --sizes ${sizes.map(sizeText).join(',')} --rounds ${rounds} --batch-ms ${batchMs} --spread-ms ${spreadMs}`;
}

/** One storm on a fresh server; `batchMs` 0 is one event per frame. */
async function storm({ users, watchers }, batchMs, spreadMs, token) {
  const server = await startServer();
  try {
    return await loadgen(['storm', '--server', server.url, '--api-key', API_KEY, '--server-token', token,
      '--pid', String(server.pid), '--users', String(users), '--watchers', String(watchers),
      '--batch-ms', String(batchMs), '--spread-ms', String(spreadMs)]);
  } finally {
    await server.stop();
  }
}

const ms = (us) => `${fmt(us / 1000, 1)} ms`;

function line(r) {
  return `${r.batch_ms ? `batch_ms=${r.batch_ms}` : 'unbatched'}: ${fmt(r.server_cpu_us_per_event, 2)} µs server CPU/event, ${fmt(r.frames_per_watcher.mean)} frames and ${fmt(r.events_per_watcher.mean)} events per watcher, last watcher p50 ${ms(r.last_watcher_us.p50)} max ${ms(r.last_watcher_us.max)}, per delivery p50 ${ms(r.delivery_us.p50)} p99 ${ms(r.delivery_us.p99)}, ${fmt(r.missing)} missing`;
}

/** The figures a table row shows, as numbers from one run's report. */
const figures = (r) => ({
  cpuPerEvent: r.server_cpu_us_per_event,
  serverCpu: r.server_cpu_secs,
  loadgenCpu: r.loadgen_cpu_secs,
  frames: r.frames_per_watcher.mean,
  events: r.events_per_watcher.mean,
  lastP50: r.last_watcher_us.p50,
  lastMax: r.last_watcher_us.max,
  deliveryP50: r.delivery_us.p50,
  deliveryP99: r.delivery_us.p99,
  stormSecs: r.storm_secs,
  perSecond: r.deliveries / r.storm_secs,
  missing: r.missing,
});

const medians = (runs) => Object.fromEntries(Object.keys(figures(runs[0])).map((k) => [k, median(runs.map((r) => figures(r)[k]))]));

export async function run({ sizes = FULL.sizes, rounds = FULL.rounds, batchMs = FULL.batchMs, spreadMs = FULL.spreadMs, log = console.log } = {}) {
  const token = serverToken();
  const out = [];
  for (const size of sizes) {
    const rows = [];
    for (let round = 0; round < rounds; round++) {
      // Alternate which delivery goes first, so that neither always runs on a machine warmed (or loaded) by the other.
      const order = round % 2 === 0 ? [0, batchMs] : [batchMs, 0];
      const got = {};
      for (const mode of order) {
        const r = await storm(size, mode, spreadMs, token);
        log(`storm ${fmt(size.users)} users × ${fmt(size.watchers)} watchers, round ${round + 1}/${rounds}, ${line(r)}`);
        got[mode ? 'batched' : 'unbatched'] = r;
      }
      const { batched: b, unbatched: u } = got;
      rows.push({
        ...got,
        ratios: {
          cpuPerEvent: b.server_cpu_us_per_event / u.server_cpu_us_per_event,
          frames: b.frames_per_watcher.mean / u.frames_per_watcher.mean,
          lastP50: b.last_watcher_us.p50 / u.last_watcher_us.p50,
          lastMax: b.last_watcher_us.max / u.last_watcher_us.max,
          deliveryP50: b.delivery_us.p50 / u.delivery_us.p50,
        },
        // The spec's bound: the last watcher no later than unbatched plus the window.
        goalMet: b.missing === 0 && b.last_watcher_us.p50 <= u.last_watcher_us.p50 + batchMs * 1000,
      });
    }
    const unbatched = medians(rows.map((r) => r.unbatched));
    const batched = medians(rows.map((r) => r.batched));
    const ratios = Object.fromEntries(Object.keys(rows[0].ratios).map((k) => [k, median(rows.map((r) => r.ratios[k]))]));
    const goalMet = batched.missing === 0 && batched.lastP50 <= unbatched.lastP50 + batchMs * 1000;
    out.push({ ...size, rounds: rows, unbatched, batched, ratios, goalMet });
  }
  return { batchMs, spreadMs, roundsPerSize: rounds, sizes: out };
}

export function markdown({ batchMs, spreadMs, roundsPerSize, sizes }) {
  const lines = [
    `Flips spread over ${fmt(spreadMs)} ms; ${roundsPerSize} round(s) per size, each running both deliveries on fresh servers (the`,
    'first alternating); figures are medians over the rounds. Server CPU: utime + stime from just before the first flip',
    'until the last watcher heard the last flip (the flips\' requests included), divided by the events delivered (events',
    'inside batches counted one by one). Last watcher: per flip, from the request\'s send to the slowest watcher\'s',
    'receipt; p50 and max over the flips. Per delivery: every watcher of every flip. Last event after: from the first',
    'flip\'s request to the last delivery; delivered per second: the events over that time.',
    '',
    '| users × watchers | delivery | server CPU per event | frames / watcher | events / watcher | last watcher p50 | max | per delivery p50 | p99 | last event after | delivered per second | missing | load generator CPU |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const s of sizes) {
    for (const [name, m] of [['one event per frame', s.unbatched], [`\`batch_ms=${batchMs}\``, s.batched]]) {
      lines.push(`| ${fmt(s.users)} × ${fmt(s.watchers)} | ${name} | ${fmt(m.cpuPerEvent, 2)} µs | ${fmt(m.frames)} | ${fmt(m.events)} | ${ms(m.lastP50)} | ${ms(m.lastMax)} | ${ms(m.deliveryP50)} | ${ms(m.deliveryP99)} | ${fmt(m.stormSecs, 2)} s | ${fmt(m.perSecond)} | ${fmt(m.missing)} | ${fmt(m.loadgenCpu, 1)} s |`);
    }
  }
  lines.push('', `Batched ÷ unbatched, median of the per-round ratios:`, '');
  for (const s of sizes) {
    const r = s.ratios;
    const perRound = (k, digits = 2) => s.rounds.map((x) => fmt(x.ratios[k], digits)).join(' / ');
    lines.push(`- ${fmt(s.users)} × ${fmt(s.watchers)}: server CPU per event **${fmt(r.cpuPerEvent, 2)}×** (${perRound('cpuPerEvent')}), frames per watcher ${fmt(r.frames, 3)}×, last watcher p50 **${fmt(r.lastP50, 2)}×** (${perRound('lastP50')}), max ${fmt(r.lastMax, 2)}×, per delivery p50 ${fmt(r.deliveryP50, 2)}×.`);
  }
  lines.push('', `Goal: the last watcher's delay batched ≤ unbatched + ${batchMs} ms (p50 over the flips, medians over the rounds):`, '');
  for (const s of sizes) {
    const rounds = s.rounds.map((x) => (x.goalMet ? 'met' : 'missed')).join(' / ');
    const over = s.batched.lastP50 - s.unbatched.lastP50;
    lines.push(`- ${fmt(s.users)} × ${fmt(s.watchers)}: batched ${ms(s.batched.lastP50)}, bound ${ms(s.unbatched.lastP50)} + ${batchMs} ms = ${ms(s.unbatched.lastP50 + batchMs * 1000)} — ${s.goalMet ? 'met' : '**missed**'} (batched − unbatched ${over >= 0 ? '+' : '−'}${ms(Math.abs(over))}; per round: ${rounds}).`);
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({
    sizes: args.sizes ? parseSizes(args.sizes) : FULL.sizes,
    rounds: args.rounds ?? FULL.rounds,
    batchMs: args.batchMs ?? FULL.batchMs,
    spreadMs: args.spreadMs ?? FULL.spreadMs,
  });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
