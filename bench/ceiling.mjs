// The cluster's ceiling (table 11). Every node applies every entry of the cluster log, so adding nodes adds
// sockets, not apply capacity: the log's rate is bounded by one node's hub thread, and Redis's work grows with the
// rate times the nodes reading it.
// - apply (`ceiling apply`, server/examples/ceiling): a population built by log entries (users, channels, connected
//   users following others and watching a channel), then entries of each kind and the steady mix of a connected
//   crowd, each decoded by the server's own `decode` and settled by its `Driver` in batches of 1,024 on one thread,
//   as a node's reader and hub thread do; on a shared database (no writes of other nodes' entries) and on a
//   SQLite file per node (every entry's writes committed). Median of the runs.
// - log (`ceiling log`): a private redis-server (free loopback port, no persistence); entries of the mix appended
//   with the server's `append` (XADD MAXLEN ~ 1,000,000) by one and by three connections with requests in flight,
//   read back by the server's `read` (tailing, and from the start as a joining node does), and appends paced at a
//   fixed rate with more and more readers tailing; Redis's CPU from `INFO cpu`. redis-benchmark, if installed,
//   appends the same entry as a cross-check.
// - the arithmetic: entries per connected user-hour from the mix; the largest cluster (nodes of 20,000 sockets)
//   whose log keeps both the hub thread and Redis's one core at most 1/HEADROOM busy.
// Usage: node bench/ceiling.mjs [--quick] [--json FILE]
//        (builds nothing: cargo build --release -p presence-server --example ceiling; needs redis-server,
//        or PRESENCE_REDIS_SERVER: bash scripts/setup.sh --cluster)
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stop } from '../server/tests/sdk/processes.mjs';
import { startRedis, tempDir } from './cluster.mjs';
import { ROOT, fmt, isMain, parseArgs } from './lib.mjs';

export const CEILING_BIN = process.env.PRESENCE_CEILING_BIN || join(ROOT, 'target', 'release', 'examples', 'ceiling');

/** Load kept below 1/HEADROOM of what was measured: room for bursts (a node's crowd reconnecting, a deploy). */
export const HEADROOM = 2;
/** Sockets one node holds (README: about 20,000, the per-process file limit). */
export const SOCKETS_PER_NODE = 20_000;

export const QUICK = {
  users: 30_000, active: 10_000, connected: 5_000, channels: 5_000, kindEntries: 1_000, mixEntries: 10_000, runs: 3,
  secs: 2, logRuns: 1, fanOutRate: 2_500, fanOutReaders: [3, 6, 12],
};
export const FULL = {
  users: 100_000, active: 20_000, connected: 10_000, channels: 10_000, kindEntries: 2_000, mixEntries: 30_000, runs: 5,
  secs: 3, logRuns: 3, fanOutRate: 2_500, fanOutReaders: [3, 6, 12, 24],
};

/** Runs the example with `args`; resolves with the JSON it prints, its progress passed on to `log`. */
function example(args, log) {
  return new Promise((done, fail) => {
    const child = spawn(CEILING_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let partial = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => {
      err = (err + d).slice(-8000);
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      for (const line of lines.filter((l) => l.trim())) log(`  ${line.trim()}`);
    });
    child.on('error', (e) => fail(new Error(`${CEILING_BIN}: ${e.message} (cargo build --release -p presence-server --example ceiling)`)));
    child.on('exit', (code) => {
      if (code !== 0) return fail(new Error(`ceiling ${args[0]} exited with ${code}:\n${err}`));
      try {
        done(JSON.parse(out));
      } catch (e) {
        fail(new Error(`ceiling ${args[0]}: unreadable output (${e.message})`));
      }
    });
  });
}

/** redis-benchmark appending `entry` as the server does, from 3 connections with 64 commands pipelined; null when absent. */
function redisBenchmark(port, entry) {
  const bin = process.env.PRESENCE_REDIS_BENCHMARK || 'redis-benchmark';
  const args = ['-h', '127.0.0.1', '-p', String(port), '-c', '3', '-P', '64', '-n', '300000', '-q',
    'XADD', 'presence:bench', 'MAXLEN', '~', '1000000', '*', 'n', 'node0', 's', '1', 'c', entry];
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  const rate = /([\d.]+) requests per second/.exec(r.stdout ?? '')?.[1];
  return rate ? { connections: 3, pipeline: 64, rate: Number(rate) } : null;
}

/** Least squares y = a + b x. */
function fit(points) {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const b = sxx > 0 ? points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx : 0;
  return { a: my - b * mx, b };
}

/**
 * The largest cluster the log carries. Users U on nodes of `perNode` sockets (N = U / perNode) cause r = U · e
 * entries/s (e: entries per connected user-second of the mix). The hub thread of every node is busy r / A (A: the
 * mix's apply rate); Redis's core r · (a + N · b) (CPU seconds per entry appended, and per entry per node reading,
 * fitted on the paced phases the load generator kept up with). Both must stay at most 1/headroom.
 */
export function ceiling({ apply, log }, { headroom = HEADROOM, perNode = SOCKETS_PER_NODE } = {}) {
  const e = apply.mix.entries_per_user_hour / 3600;
  const budget = 1 / headroom;
  const kept = log.fan_out.filter((r) => r.achieved_rate >= 0.95 * r.rate && r.readers_behind_at_end <= r.rate);
  const { a, b } = fit(kept.map((r) => ({ x: r.readers, y: r.redis_cpu_share / r.achieved_rate })));
  const bound = (applyRate) => {
    const applyUsers = (budget * applyRate) / e;
    // e U (a + b U / perNode) = budget
    const qa = (e * b) / perNode;
    const redisUsers = qa > 0 ? (-e * a + Math.sqrt((e * a) ** 2 + 4 * qa * budget)) / (2 * qa) : budget / (e * a);
    const users = Math.min(applyUsers, redisUsers);
    return {
      applyRate, applyUsers, redisUsers, users, rate: users * e, nodes: users / perNode,
      binds: applyUsers <= redisUsers ? 'apply' : 'redis',
    };
  };
  const rows = [5, 10, 25, 50, 75, 100, 150].map((nodes) => {
    const users = nodes * perNode;
    const rate = users * e;
    return {
      nodes, users, rate,
      applySqlite: rate / apply.mix.sqlite.rate,
      applyShared: rate / apply.mix.shared.rate,
      redis: rate * (a + nodes * b),
    };
  });
  return {
    headroom, perNode, entriesPerUserHour: apply.mix.entries_per_user_hour, redisFit: { a, b, rows: kept.length },
    sqlite: bound(apply.mix.sqlite.rate),
    shared: bound(apply.mix.shared.rate),
    rows,
  };
}

export async function run(plan = FULL, log = console.log) {
  log(`ceiling: applying entries (${fmt(plan.users)} users, ${fmt(plan.connected)} connected, ${plan.runs} runs)`);
  const apply = await example(['apply', '--users', plan.users, '--active', plan.active, '--connected', plan.connected,
    '--channels', plan.channels, '--kind-entries', plan.kindEntries, '--mix-entries', plan.mixEntries,
    '--runs', plan.runs].map(String), log);
  const dir = tempDir();
  const redis = await startRedis(dir);
  let logRates;
  let cross;
  try {
    log(`ceiling: Redis (${plan.logRuns} run(s) of ${plan.secs} s phases)`);
    logRates = await example(['log', '--redis-url', `redis://127.0.0.1:${redis.port}`, '--secs', plan.secs,
      '--runs', plan.logRuns, '--fan-out-rate', plan.fanOutRate, '--fan-out-readers', plan.fanOutReaders.join(',')]
      .map(String), log);
    cross = redisBenchmark(redis.port, logRates.sample_entry);
  } finally {
    await stop(redis.proc);
    rmSync(dir, { recursive: true, force: true });
  }
  const result = { plan, apply, log: logRates, redisBenchmark: cross };
  result.ceiling = ceiling(result);
  const c = result.ceiling.sqlite;
  log(`ceiling: ${fmt(c.users)} connected users, ${fmt(c.rate)} entries/s on ${fmt(c.nodes, 1)} nodes (${c.binds} binds)`);
  return result;
}

export function command(plan) {
  return `cargo build --release -p presence-server --example ceiling && node bench/ceiling.mjs${plan === QUICK ? ' --quick' : ''}`;
}

const us = (x) => fmt(x, 1);
const pct = (x) => `${fmt(100 * x, 0)} %`;

export function markdown({ plan, apply, log, redisBenchmark: cross, ceiling: c }) {
  const m = apply.mix;
  const p = apply.population;
  const lines = [
    '### Applying entries',
    '',
    `One thread applies the log as a node's reader and hub thread do: each entry decoded from its stream entry (the`,
    `server's \`decode\`), then batches of 1,024 settled by the server's \`Driver\` and a read view made. Population,`,
    `built by ${fmt(p.entries)} log entries: ${fmt(apply.shape.users)} users, ${fmt(apply.shape.channels)} channels of ${apply.shape.members} members`,
    `(among ${fmt(apply.shape.active)} active users), ${fmt(p.open_connections)} connections, each following ${apply.shape.follows} active users`,
    `(${fmt(p.follows)} follows) and watching one of its user's channels with presence. Each kind: ${fmt(plan.kindEntries)} entries from`,
    `that state; the recipients are the connections (on every node) a frame was produced for. Median of ${plan.runs} runs.`,
    '',
    '| entries | bytes each | recipients per entry | decode µs | apply µs | **entries/s** | runs |',
    '|---|---:|---:|---:|---:|---:|---|',
  ];
  const row = (name, r, bytes) => `| ${name} | ${fmt(bytes)} | ${fmt(r.recipients_per_entry, 1)} | ${us(r.decode_us)} | ${us(r.settle_us)} | **${fmt(r.rate)}** | ${r.runs.map((x) => fmt(x)).join(' / ')} |`;
  const names = {
    connect: 'connect', disconnect: 'disconnect (close 1000)', follow: `follow (\`queryUsers\` presence, ${apply.shape.follows} ids)`,
    watch: 'watch a channel (`channel.watch()`, presence)', status: 'status change (partial update)', invisible: 'invisible flip (partial update)',
  };
  for (const k of apply.kinds) lines.push(row(names[k.kind] ?? k.kind, k, k.bytes));
  lines.push(row('**steady mix**, shared database', m.shared, m.bytes));
  lines.push(row('**steady mix**, SQLite per node', m.sqlite, m.bytes));
  const counts = Object.entries(m.counts).map(([k, n]) => `${k} ${fmt(n)}`).join(', ');
  lines.push(
    '',
    `The steady mix: per connected user-hour, ${m.sessions_per_hour} sessions (each a connect, a follow and a watch, then a`,
    `disconnect, ${pct(m.abnormal_share)} of them abnormal and ending in a grace window's end, \`Timeout\`), ${m.status_per_hour} status change and`,
    `${m.invisible_per_hour} invisible flip: **${fmt(m.entries_per_user_hour, 1)} entries per connected user-hour**. Health checks and \`last_active\``,
    `refreshes stay on the user's node and are not entries. ${fmt(m.entries)} entries: ${counts}. With a SQLite file per`,
    `node each batch commits every entry's writes (${fmt(m.sqlite.writes_per_entry, 2)} per entry); on a shared database a node commits only`,
    'its own.',
    '',
    '### Redis',
    '',
    `Entries of the mix (${fmt(log.entry_bytes)} bytes of JSON on average) appended by the server's \`append\` to a private`,
    `redis-server for ${log.secs} s per phase (median of ${plan.logRuns}); readers are the server's \`read\` (XREAD COUNT 1024 BLOCK), tailing.`,
    'The load generator, Redis and the readers share the 2 cores: Redis CPU per entry is its own cost.',
    '',
    '| appenders × requests in flight | readers | appends/s | Redis CPU per entry appended | runs (appends/s) |',
    '|---|---:|---:|---:|---|',
  );
  for (const ph of log.phases) {
    const runs = ph.runs.map((r) => fmt(r.append_rate)).join(' / ');
    lines.push(`| ${ph.appenders} × ${ph.in_flight} | ${ph.readers} | **${fmt(ph.append_rate)}** | ${fmt(ph.redis_cpu_us_per_entry, 2)} µs | ${runs} |`);
  }
  const j = log.joining;
  lines.push(
    '',
    `A joining node's read from the start (${fmt(j.entries)} entries): ${fmt(j.rate)} entries/s, ${fmt(j.redis_cpu_us_per_entry, 2)} µs of Redis CPU each.`,
    cross ? `redis-benchmark, the same XADD from ${cross.connections} connections × ${cross.pipeline} pipelined: ${fmt(cross.rate)} appends/s.` : 'redis-benchmark: not installed.',
    '',
    `Nodes reading: ${fmt(plan.fanOutRate)} appends/s paced from 3 connections (one request at a time each), N readers tailing`,
    '(XREAD as a node\'s reader asks it, parsed but not decoded, so each comes back for more at least as often as a node).',
    '',
    '| readers | appends/s | Redis CPU | XREAD/s | entries per XREAD |',
    '|---:|---:|---:|---:|---:|',
  );
  for (const f of log.fan_out) lines.push(`| ${f.readers} | ${fmt(f.achieved_rate)} | ${pct(f.redis_cpu_share)} | ${fmt(f.xread_calls_per_sec)} | ${fmt(f.entries_per_xread, 1)} |`);
  const s = c.sqlite;
  const sh = c.shared;
  lines.push(
    '',
    `Fitted on the rows where the load generator kept pace (${c.redisFit.rows}): Redis spends **${us(c.redisFit.a * 1e6)} µs per entry appended + ${us(c.redisFit.b * 1e6)} µs per entry`,
    'per node reading it** (batches grow with the rate, so above this rate the per-reader cost is lower).',
    '',
    '### The ceiling',
    '',
    `Nodes of ${fmt(c.perNode)} sockets, ${fmt(c.entriesPerUserHour, 1)} entries per connected user-hour, every load at most 1/${c.headroom} of what was measured`,
    `(the hub thread of every node: entries/s ÷ the mix's apply rate; Redis's core: entries/s × (${us(c.redisFit.a * 1e6)} µs + nodes × ${us(c.redisFit.b * 1e6)} µs)).`,
    '',
    '| nodes | connected users | entries/s | hub thread, SQLite per node | hub thread, shared database | Redis |',
    '|---:|---:|---:|---:|---:|---:|',
  );
  for (const r of c.rows) lines.push(`| ${r.nodes} | ${fmt(r.users)} | ${fmt(r.rate)} | ${pct(r.applySqlite)} | ${pct(r.applyShared)} | ${pct(r.redis)} |`);
  lines.push(
    '',
    `- SQLite per node: the hub thread allows ${fmt(s.applyUsers)} users (${fmt(s.applyRate / c.headroom)} entries/s), Redis ${fmt(s.redisUsers)}:`,
    `  **${fmt(s.users)} connected users, ${fmt(s.rate)} entries/s, ${fmt(s.nodes, 1)} nodes** (${s.binds === 'apply' ? 'the apply rate' : 'Redis'} binds).`,
    `- Shared database: the hub thread allows ${fmt(sh.applyUsers)} users, Redis ${fmt(sh.redisUsers)}: **${fmt(sh.users)} users, ${fmt(sh.rate)} entries/s,`,
    `  ${fmt(sh.nodes, 1)} nodes** (${sh.binds === 'apply' ? 'the apply rate' : 'Redis'} binds).`,
  );
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const plan = args.quick ? QUICK : FULL;
  const result = await run(plan);
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
