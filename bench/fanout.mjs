// Fan-out latency and idle capacity, driven through the Rust load generator (bench/loadgen, `presence-loadgen`).
// - fan-out: N watchers follow one user (`queryUsers` with `presence: true`); the user flips (`invisible` on and off
//   by partial update) and every watcher timestamps the `user.presence.changed`. Next to it, the limit: the same
//   watchers and frame bytes against a minimal tokio WebSocket broadcast (`presence-loadgen broadcast-server`).
//   Each size runs `--rounds` times, the server and the limit back to back in each round; the verdict is the
//   median of the rounds' ratios, and the table shows that round.
// - capacity: N idle authenticated connections; the server's RSS before and after, and the connect rate.
// - profile (--profile DIR, when perf is installed): the largest size's flips sampled on the server with perf.
// Usage: node bench/fanout.mjs [--watchers 1000,10000] [--flips 30] [--rounds 3] [--connections 15000]
//        [--json FILE] [--profile DIR]
//        (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { API_KEY, ROOT, fmt, isMain, parseArgs, startServer } from './lib.mjs';

export const LOADGEN_BIN = process.env.PRESENCE_LOADGEN_BIN || join(ROOT, 'target', 'release', 'presence-loadgen');

/** Load generators still running, killed if the process leaves first (on an error, or SIGINT / SIGTERM, which
 *  lib.mjs turns into an exit). */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Runs the load generator; resolves with the JSON it prints. `onLine` sees each line it writes on stderr. */
export function loadgen(args, { onLine, env } = {}) {
  return new Promise((done, fail) => {
    const child = spawn(LOADGEN_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    running.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    let partial = '';
    child.stderr.on('data', (d) => {
      err += d;
      if (!onLine) return;
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      lines.forEach(onLine);
    });
    child.once('exit', (code) => {
      running.delete(child);
      if (code !== 0) return fail(new Error(`presence-loadgen ${args[0]} failed (${code}): ${err.trim()}`));
      try {
        done(JSON.parse(out));
      } catch {
        fail(new Error(`presence-loadgen ${args[0]}: no JSON in ${out}`));
      }
    });
  });
}

/** Starts the broadcast baseline; resolves with { url, stop() }. */
async function startBroadcast() {
  const child = spawn(LOADGEN_BIN, ['broadcast-server', '--max-secs', '900'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((done, fail) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (ws:\/\/\S+)/.exec(out);
      if (m) done(m[1]);
    });
    child.once('exit', (code) => fail(new Error(`broadcast-server exited (${code})`)));
  });
  process.on('exit', () => child.kill('SIGKILL'));
  return { url, stop: () => child.kill('SIGTERM') };
}

/** Whether `perf` (Debian's linux-perf) can sample here. */
function havePerf() {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Samples process `pid` with `perf record` into `file` until the returned stop() is awaited, which resolves with
 *  where its CPU went: the share of samples per thread, and the top symbols (thread, symbol, share). */
function perfRecord(pid, file) {
  const child = spawn('perf', ['record', '-F', '999', '-p', String(pid), '-o', file], { stdio: 'ignore' });
  running.add(child);
  const exited = new Promise((done) => child.once('exit', done));
  return async () => {
    child.kill('SIGINT');
    await exited;
    running.delete(child);
    const report = (sort) => spawnSync('perf', ['report', '-i', file, '--stdio', '--sort', sort], { encoding: 'utf8' }).stdout || '';
    const byThread = report('comm');
    const samples = /^# Samples: (\S+)\s+of event/m.exec(byThread)?.[1];
    const threads = [...byThread.matchAll(/^\s*([\d.]+)%\s+(\S+)\s*$/gm)].map((m) => ({ thread: m[2], share: Number(m[1]) }));
    const symbols = [...report('comm,sym').matchAll(/^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$/gm)]
      .slice(0, 15)
      .map((m) => ({ thread: m[2], kernel: m[3] === 'k', symbol: m[4], share: Number(m[1]) }));
    return { samples, threads, symbols };
  };
}

export async function run({ watchers = [1000, 10000], flips = 30, rounds = 3, connections = 15000, profileDir, log = console.log } = {}) {
  if (!existsSync(LOADGEN_BIN)) throw new Error(`no load generator at ${LOADGEN_BIN} (cargo build --release -p presence-loadgen)`);
  const fanout = [];
  const perf = profileDir && havePerf();
  if (profileDir && !perf) log('fan-out: perf is not installed (apt-get install linux-perf): no server profile');
  for (const n of watchers) {
    const measured = [];
    for (let round = 0; round < rounds; round++) {
      // A fresh server and baseline per size and round, so that earlier connections do not weigh on the next.
      const server = await startServer();
      // The largest size's last round is profiled during its flips (after every watcher is set up).
      let stopPerf;
      let profile;
      const onLine = perf && n === Math.max(...watchers) && round === rounds - 1
        ? (line) => {
          if (line === 'flipping' && !stopPerf) {
            mkdirSync(profileDir, { recursive: true });
            stopPerf = perfRecord(server.pid, join(profileDir, `fanout-${n}.perf.data`));
          }
        }
        : undefined;
      const ours = await loadgen(['fanout', '--server', server.url, '--api-key', API_KEY, '--watchers', String(n), '--flips', String(flips)], { onLine })
        .finally(async () => {
          if (stopPerf) profile = await stopPerf();
          await server.stop();
        });
      const broadcast = await startBroadcast();
      const limit = await loadgen(['fanout', '--baseline', '--server', broadcast.url, '--watchers', String(n), '--flips', String(flips)]).finally(() => broadcast.stop());
      const ratio = ours.last_watcher_us.p50 / limit.last_watcher_us.p50;
      log(`fan-out to ${n}, round ${round + 1}/${rounds}: last watcher p50 ${fmt(ours.last_watcher_us.p50 / 1000, 1)} ms (limit ${fmt(limit.last_watcher_us.p50 / 1000, 1)} ms), ${fmt(ratio, 2)}×`);
      measured.push({ ours, limit, ratio, profile });
    }
    // The median round (of an even number, the upper one).
    const ratios = measured.map((m) => m.ratio);
    const median = [...measured].sort((a, b) => a.ratio - b.ratio)[Math.floor(measured.length / 2)];
    const profile = measured.find((m) => m.profile)?.profile;
    fanout.push({ watchers: n, ours: median.ours, limit: median.limit, ratioLast: median.ratio, ratios, profile });
  }
  const server = await startServer();
  let capacity;
  try {
    capacity = await loadgen(['capacity', '--server', server.url, '--api-key', API_KEY, '--connections', String(connections), '--pid', String(server.pid)]);
  } finally {
    await server.stop();
  }
  log(`capacity: ${fmt(capacity.connections)} idle connections, ${fmt(capacity.rss_per_connection / 1024, 1)} KiB RSS each, ${fmt(capacity.connects_per_sec)} connects/s`);
  return { flips, rounds, fanout, capacity };
}

const ms = (us) => `${fmt(us / 1000, 1)} ms`;

export function markdownFanout({ flips, rounds = 1, fanout }) {
  const lines = [
    `${flips} flips per size and round; per delivery: every watcher of every flip; last watcher: the slowest watcher of each flip.`,
    `${rounds} round(s) per size, presence-server and the limit back to back in each (fresh processes); shown: the round`,
    'whose ratio is the median.',
    '',
    '| watchers | target | per delivery p50 | p99 | max | last watcher p50 | p99 | max | × limit (last, p50) |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of fanout) {
    for (const [name, r] of [['presence-server', row.ours], ['limit: tokio broadcast', row.limit]]) {
      const d = r.delivery_us;
      const l = r.last_watcher_us;
      lines.push(`| ${fmt(row.watchers)} | ${name} | ${ms(d.p50)} | ${ms(d.p99)} | ${ms(d.max)} | ${ms(l.p50)} | ${ms(l.p99)} | ${ms(l.max)} | ${name === 'presence-server' ? `**${fmt(row.ratioLast, 2)}**` : '1.00'} |`);
    }
  }
  if (fanout.some((row) => row.ratios?.length > 1)) {
    lines.push('', `Ratio (last watcher p50 ÷ the limit's) per round: ${fanout.map((row) => `${fmt(row.watchers)} watchers ${row.ratios.map((x) => fmt(x, 2)).join(' / ')}`).join('; ')}.`);
  }
  for (const row of fanout.filter((r) => r.profile)) {
    const { samples, threads, symbols } = row.profile;
    lines.push(
      '',
      `Where presence-server's CPU went during the ${fmt(row.watchers)}-watcher flips (\`perf record -F 999\` on the server from`,
      `the first flip to the last${samples ? `, ${samples} samples` : ''}; by thread: ${threads.map((t) => `${t.thread} ${fmt(t.share, 1)} %`).join(', ')}):`,
      '',
      '| share of samples | thread | symbol |',
      '|---:|---|---|',
      ...symbols.map((x) => `| ${fmt(x.share, 2)} % | ${x.thread} | ${x.kernel ? 'kernel: ' : ''}\`${x.symbol.replace(/\|/g, '\\|')}\` |`),
      '',
      // What the profile of this code shows (BENCHMARKS.md, section 3); to be read again when the code changes.
      'Reading the profile: most of the server\'s time is the kernel\'s loopback TCP path (the send, and the receiving',
      'socket\'s processing charged to the sender), which the limit pays as well. What the limit does not pay: the REST',
      'call once, and per recipient the hub thread\'s share (the engine picking the audience, then the bus queueing the',
      'shared frame on each connection\'s outlet and waking its task across threads: `Outlet::deliver`,',
      '`LocalBus::publish`), and in the workers the task taking the frame from its queue (`try_recv`) and the',
      'WebSocket\'s sink registering its wakers on each call (`AtomicWaker::register`). A wake-up by a queued frame',
      'polls neither the socket\'s read nor the timer, and connection ids hash with foldhash.',
    );
  }
  return lines.join('\n');
}

export function markdownCapacity({ capacity: c }) {
  return [
    '| idle authenticated connections | connect rate | server RSS before | after | per connection | goal |',
    '|---:|---:|---:|---:|---:|---|',
    `| ${fmt(c.connections)} | ${fmt(c.connects_per_sec)} /s | ${fmt(c.rss_before / 1048576, 1)} MiB | ${fmt(c.rss_after / 1048576, 1)} MiB | **${fmt(c.rss_per_connection / 1024, 1)} KiB** | ≤ 8 KiB: ${c.rss_per_connection <= 8192 ? 'met' : '**missed**'} |`,
  ].join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const watchers = args.watchers ? String(args.watchers).split(',').map(Number) : [1000, 10000];
  const result = await run({ watchers, flips: args.flips ?? 30, rounds: args.rounds ?? 3, connections: args.connections ?? 15000, profileDir: args.profile });
  console.log(`\n${markdownFanout(result)}\n\n${markdownCapacity(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
