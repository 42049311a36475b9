// Cluster mode next to one node, same release build, same run: a private redis-server on a free loopback port and
// three presence-server nodes on it (each on its own SQLite file in a temporary folder), against one node alone.
// - fan-out: one user flips presence; N watchers spread round-robin over the three nodes vs the same N on one node.
// - node death: kill -9 of the node holding a user's only connection; time until a watcher on another node sees
//   `user.presence.changed` online: false (bound: key TTL 10 s + one 3 s check).
// - capacity: idle authenticated connections held by three processes (one load generator per node) vs one process.
// - queries: pinned `queryUsers` (`id $in` of 30) on a cluster node vs one node.
// Usage: node bench/cluster.mjs [--quick] [--watchers 1000,5000] [--flips 10] [--deaths 5] [--connections 10000]
//          [--users 2000] [--query-secs 10] [--json FILE]
//        (builds nothing: cargo build --release -p presence-server -p presence-loadgen; needs redis-server,
//        or PRESENCE_REDIS_SERVER: bash scripts/setup.sh --cluster)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { freePort, stop } from '../server/tests/sdk/processes.mjs';
import { LOADGEN_BIN, loadgen } from './fanout.mjs';
import { API_KEY, connectUrl, devToken, fmt, isMain, median, parseArgs, serverToken, sleep, startServer } from './lib.mjs';

const REDIS = process.env.PRESENCE_REDIS_SERVER || 'redis-server';

export const QUICK = { watchers: [1000], flips: 5, deaths: 2, connections: 2000, users: 2000, querySecs: 5 };
export const FULL = { watchers: [1000, 5000], flips: 10, deaths: 5, connections: 10000, users: 2000, querySecs: 10 };

// Everything started here is stopped when the process leaves, on error and on Ctrl-C too (lib.mjs turns SIGINT and
// SIGTERM into an exit, which runs this).
const procs = new Set();
const dirs = new Set();
process.on('exit', () => {
  for (const proc of procs) proc.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function track(proc) {
  procs.add(proc);
  proc.once('exit', () => procs.delete(proc));
  return proc;
}

export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'presence-bench-cluster-'));
  dirs.add(dir);
  return dir;
}

function rss(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** A private redis-server in `dir` on a free loopback port, without persistence; stopped when the process leaves. */
export async function startRedis(dir) {
  const port = await freePort();
  const proc = track(spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] }));
  let seen = '';
  await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`redis-server did not start within 15 s:\n${seen}`)), 15_000);
    proc.on('error', (e) => { clearTimeout(timer); fail(new Error(`${REDIS}: ${e.message} (bash scripts/setup.sh --cluster)`)); });
    proc.stdout.on('data', (d) => {
      seen = (seen + d).slice(-4000);
      if (/Ready to accept connections/.test(seen)) { clearTimeout(timer); done(); }
    });
    proc.once('exit', (code) => { clearTimeout(timer); fail(new Error(`redis-server exited (${code}):\n${seen}`)); });
  });
  return { proc, port };
}

/** Redis and three nodes (node0..node2), each on a SQLite file of its own. */
async function startCluster() {
  const dir = tempDir();
  const redis = await startRedis(dir);
  const cluster = { dir, redis, nodes: [] };
  try {
    for (let i = 0; i < 3; i++) cluster.nodes.push(await startNode(cluster, i));
  } catch (e) {
    await stopCluster(cluster);
    throw e;
  }
  return cluster;
}

function startNode(cluster, i) {
  return startServer(['--db', join(cluster.dir, `node${i}.db`), '--redis-url', `redis://127.0.0.1:${cluster.redis.port}`,
    '--node-id', `node${i}`]);
}

async function stopCluster(cluster) {
  await Promise.all(cluster.nodes.map((n) => n.stop()));
  await stop(cluster.redis.proc);
  rmSync(cluster.dir, { recursive: true, force: true });
  dirs.delete(cluster.dir);
}

/** One node alone (no Redis), on a SQLite file. */
async function startSingle() {
  const dir = tempDir();
  const server = await startServer(['--db', join(dir, 'single.db')]);
  return {
    ...server,
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
}

// ---- 1. fan-out --------------------------------------------------------------------------------------------------

async function fanout({ watchers, flips, log }) {
  const rows = [];
  for (const n of watchers) {
    const single = await startSingle();
    const one = await loadgen(['fanout', '--server', single.url, '--api-key', API_KEY, '--watchers', String(n), '--flips', String(flips)])
      .finally(() => single.stop());
    const cluster = await startCluster();
    const three = await loadgen(['fanout', '--server', cluster.nodes.map((x) => x.url).join(','), '--api-key', API_KEY,
      '--watchers', String(n), '--flips', String(flips)]).finally(() => stopCluster(cluster));
    const row = {
      watchers: n,
      single: one,
      cluster: three,
      ratio: {
        deliveryP50: three.delivery_us.p50 / one.delivery_us.p50,
        deliveryP99: three.delivery_us.p99 / one.delivery_us.p99,
        lastP50: three.last_watcher_us.p50 / one.last_watcher_us.p50,
        lastP99: three.last_watcher_us.p99 / one.last_watcher_us.p99,
      },
    };
    log(`fan-out to ${fmt(n)}: last watcher p50 ${fmt(three.last_watcher_us.p50 / 1000, 1)} ms on 3 nodes vs ${fmt(one.last_watcher_us.p50 / 1000, 1)} ms on one (${fmt(row.ratio.lastP50, 2)}×)`);
    rows.push(row);
  }
  return rows;
}

// ---- 2. node death -----------------------------------------------------------------------------------------------

async function openSocket(server, id) {
  const ws = new WebSocket(connectUrl(server.wsUrl, id));
  ws.on('error', () => {});
  const [hello] = await once(ws, 'message', { signal: AbortSignal.timeout(15_000) });
  const frame = JSON.parse(hello);
  if (!frame.connection_id) throw new Error(`${id}: no connection_id in the first frame: ${hello}`);
  return { ws, connectionId: frame.connection_id };
}

/** A connection on `server` following `target`'s presence; `offline` resolves with the time it is seen offline. */
async function follow(server, id, target) {
  const { ws, connectionId } = await openSocket(server, id);
  let seenOffline;
  const offline = new Promise((done) => { seenOffline = done; });
  ws.on('message', (raw) => {
    const event = JSON.parse(raw);
    if (event.type === 'user.presence.changed' && event.user?.id === target && event.user.online === false) seenOffline(performance.now());
  });
  const payload = encodeURIComponent(JSON.stringify({ filter_conditions: { id: { $in: [target] } }, presence: true, limit: 1 }));
  const answer = await fetch(`${server.url}/users?api_key=${API_KEY}&user_id=${id}&connection_id=${connectionId}&payload=${payload}`,
    { headers: { Authorization: devToken(id), 'stream-auth-type': 'jwt' } }).then((r) => r.json());
  return { online: answer.users?.[0]?.online === true, offline, close: () => ws.close(1000) };
}

async function deaths(cluster, runs, log) {
  const samples = [];
  for (let run = 0; run < runs; run++) {
    const victim = cluster.nodes[2];
    const dying = `dying-${run}`;
    const { ws } = await openSocket(victim, dying);
    const watcher = await follow(cluster.nodes[run % 2], `death-watcher-${run}`, dying);
    if (!watcher.online) throw new Error(`${dying} is not online for the watcher to start with`);
    // A random moment within one 3 s beat, so that the runs cover the phases of the dead node's key refresh.
    await sleep(Math.random() * 3000);
    const t0 = performance.now();
    process.kill(victim.pid, 'SIGKILL');
    const at = await Promise.race([watcher.offline, sleep(30_000).then(() => null)]);
    ws.terminate();
    watcher.close();
    if (at === null) throw new Error(`run ${run}: ${dying} not seen offline within 30 s of the kill`);
    samples.push(at - t0);
    log(`node death ${run + 1}/${runs}: seen offline after ${fmt((at - t0) / 1000, 1)} s`);
    await victim.stop();
    // The same node id again on the same database, for the next run.
    cluster.nodes[2] = await startNode(cluster, 2);
  }
  return { runs, samples, p50: median(samples), max: Math.max(...samples), boundMs: 13_000 };
}

// ---- 3. capacity -------------------------------------------------------------------------------------------------

/** `count` idle connections to `server` from one load generator that holds them; resolves once all are open. */
function holdConnections(server, count, first) {
  const proc = track(spawn(LOADGEN_BIN, ['capacity', '--server', server.url, '--api-key', API_KEY, '--connections', String(count),
    '--pid', String(server.pid), '--first', String(first), '--hold-secs', '300', '--max-secs', '900'], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  const connected = new Promise((done, fail) => {
    proc.stderr.on('data', (d) => {
      err = (err + d).slice(-4000);
      const m = /connected \d+ in ([\d.]+) s/.exec(err);
      if (m) done(Number(m[1]));
    });
    proc.once('exit', (code) => fail(new Error(`presence-loadgen capacity exited (${code}): ${err.trim()}`)));
  });
  return { proc, connected };
}

async function capacity(connections, log) {
  // Source addresses (and users) of their own, 127.0.0.6 and up, away from the ones the fan-out runs and the
  // other benchmarks use (127.0.0.2, .3): closed connections leave their ports in TIME_WAIT for a minute.
  const stride = 10_000 * Math.ceil(connections / 10_000);
  const single = await startSingle();
  let one;
  try {
    one = await loadgen(['capacity', '--server', single.url, '--api-key', API_KEY, '--connections', String(connections), '--pid', String(single.pid),
      '--first', String(4 * stride)]);
  } finally {
    await single.stop();
  }
  log(`capacity, one process: ${fmt(connections)} connections, ${fmt(one.rss_per_connection / 1024, 1)} KiB each, ${fmt(one.connects_per_sec)} connects/s`);
  const cluster = await startCluster();
  const holders = [];
  try {
    const before = cluster.nodes.map((n) => rss(n.pid));
    const t0 = performance.now();
    // After the one process's addresses: 127.0.0.7 and up. One node after the other, each at the one process's
    // 128 connects in flight: three generators at once (384 in flight) time out the cluster log's Redis commands
    // on this 2-core machine, and the connects are refused (code -1).
    const secs = [];
    for (const [i, node] of cluster.nodes.entries()) {
      const holder = holdConnections(node, connections, (i + 5) * stride);
      holders.push(holder);
      secs.push(await holder.connected);
    }
    const wall = (performance.now() - t0) / 1000;
    // Let the nodes settle (first pings answered, buffers at rest) before reading their memory, as for one process.
    await sleep(6_000);
    const after = cluster.nodes.map((n) => rss(n.pid));
    const total = connections * 3;
    const result = {
      connectionsPerNode: connections,
      total,
      connectSecs: secs,
      connectsPerSec: total / secs.reduce((a, b) => a + b, 0),
      wallSecs: wall,
      rssBefore: before,
      rssAfter: after,
      rssPerLocalConnection: after.map((a, i) => (a - before[i]) / connections),
      rssPerClusterConnection: after.reduce((s, a, i) => s + a - before[i], 0) / total,
    };
    log(`capacity, three processes: ${fmt(total)} connections, ${result.rssPerLocalConnection.map((x) => fmt(x / 1024, 1)).join(' / ')} KiB per local connection, ${fmt(result.connectsPerSec)} connects/s`);
    return { single: one, cluster: result };
  } finally {
    await Promise.all(holders.map((h) => stop(h.proc)));
    await stopCluster(cluster);
  }
}

// ---- 4. queries --------------------------------------------------------------------------------------------------

function queries(server, users, secs) {
  return loadgen(['queryload', '--server', server.url, '--api-key', API_KEY, '--server-token', serverToken(), '--users', String(users),
    '--channels', '1', '--probes', '1', '--loopers', '0', '--secs', String(secs)]);
}

async function queryLatency(cluster, users, secs, log) {
  const single = await startSingle();
  const one = await queries(single, users, secs).finally(() => single.stop());
  // Seeded through and queried on node1, so every query there first catches up with the log's last id.
  const three = await queries(cluster.nodes[1], users, secs);
  const a = one.query_ms_by_kind.users_pinned;
  const b = three.query_ms_by_kind.users_pinned;
  log(`pinned queryUsers p50 ${fmt(b.p50, 2)} ms on a cluster node vs ${fmt(a.p50, 2)} ms on one node`);
  return { users, secs, single: a, cluster: b, ratioP50: b.p50 / a.p50, ratioP99: b.p99 / a.p99 };
}

// ---- the run -----------------------------------------------------------------------------------------------------

export async function run({ watchers, flips, deaths: deathRuns, connections, users, querySecs, log = console.log } = FULL) {
  const result = { watchers, flips, connections };
  result.fanout = await fanout({ watchers, flips, log });
  const cluster = await startCluster();
  try {
    result.query = await queryLatency(cluster, users, querySecs, log);
    result.death = await deaths(cluster, deathRuns, log);
  } finally {
    await stopCluster(cluster);
  }
  result.capacity = await capacity(connections, log);
  return result;
}

/** The command that reproduces the tables of `plan`. */
export function command(plan) {
  return `cargo build --release -p presence-server -p presence-loadgen && node bench/cluster.mjs --watchers ${plan.watchers.join(',')} --flips ${plan.flips} --deaths ${plan.deaths} --connections ${plan.connections} --users ${plan.users} --query-secs ${plan.querySecs}`;
}

const ms = (us) => `${fmt(us / 1000, 1)} ms`;
const mib = (b) => `${fmt(b / 1048576, 1)} MiB`;
const kib = (b) => `${fmt(b / 1024, 1)} KiB`;
const x = (r) => `${fmt(r, 2)}×`;

export function markdown(r) {
  const lines = [
    '### Fan-out across nodes',
    '',
    `One user (connected to node 0, flipped through node 0 by partial update of \`invisible\`) and N watchers following`,
    `it, spread round-robin over the three nodes (each queries its own node), against the same N on one node; ${r.flips}`,
    'flips per size. Per delivery: every watcher of every flip; last watcher: the slowest of each flip.',
    '',
    '| watchers | target | per delivery p50 | p99 | last watcher p50 | p99 | × one node (delivery p50 / p99, last p50 / p99) |',
    '|---:|---|---:|---:|---:|---:|---|',
  ];
  for (const row of r.fanout) {
    const s = row.single;
    const c = row.cluster;
    lines.push(`| ${fmt(row.watchers)} | one node | ${ms(s.delivery_us.p50)} | ${ms(s.delivery_us.p99)} | ${ms(s.last_watcher_us.p50)} | ${ms(s.last_watcher_us.p99)} | 1.00 |`);
    lines.push(`| ${fmt(row.watchers)} | 3 nodes | ${ms(c.delivery_us.p50)} | ${ms(c.delivery_us.p99)} | ${ms(c.last_watcher_us.p50)} | ${ms(c.last_watcher_us.p99)} | ${x(row.ratio.deliveryP50)} / ${x(row.ratio.deliveryP99)}, **${x(row.ratio.lastP50)}** / ${x(row.ratio.lastP99)} |`);
  }
  const d = r.death;
  lines.push('', '### Node death', '',
    'A user\'s only connection is on node 2; a watcher on node 0 or 1 follows it. Node 2 is killed with SIGKILL at a',
    'random moment of its 3 s beat; the time until the watcher gets `user.presence.changed` online: false. Node 2 is',
    'then started again with the same id and database for the next run.',
    '',
    '| runs | p50 | max | bound (key TTL 10 s + one 3 s check) | each |',
    '|---:|---:|---:|---:|---|',
    `| ${d.runs} | **${fmt(d.p50 / 1000, 1)} s** | ${fmt(d.max / 1000, 1)} s | 13 s: ${d.max <= d.boundMs ? 'within' : '**over**'} | ${d.samples.map((v) => fmt(v / 1000, 1)).join(', ')} s |`);
  const c = r.capacity;
  const k = c.cluster;
  lines.push('', '### Connections held by three processes', '',
    'Idle authenticated connections (distinct users, each read so that it answers pings), opened 128 at a time by one',
    'load generator per node, node after node, each holding its own; each node\'s RSS before and 6 s after all are',
    'open; the connect rate over the three connect phases. One process: the same count on one node without Redis.',
    'Per cluster connection: the three nodes\' growth over all the cluster\'s connections (every node\'s engine holds',
    'every connection of the cluster).',
    '',
    '| processes | connections | connect rate | RSS after (per node) | per local connection | per cluster connection |',
    '|---:|---:|---:|---:|---:|---:|',
    `| 1 | ${fmt(c.single.connections)} | ${fmt(c.single.connects_per_sec)} /s | ${mib(c.single.rss_after)} | **${kib(c.single.rss_per_connection)}** | – |`,
    `| 3 | ${fmt(k.total)} (${fmt(k.connectionsPerNode)} each) | ${fmt(k.connectsPerSec)} /s | ${k.rssAfter.map(mib).join(' / ')} | **${k.rssPerLocalConnection.map(kib).join(' / ')}** | ${kib(k.rssPerClusterConnection)} |`);
  const q = r.query;
  lines.push('', '### Queries on a cluster node', '',
    `Pinned \`queryUsers\` (\`id $in\` of 30 of ${fmt(q.users)} users, server token) looped back to back for ${q.secs} s by`,
    'one client, on one node and on cluster node 1 (which first waits until it has applied the log up to the stream\'s',
    'last id: one Redis round trip).',
    '',
    '| target | queries | p50 | p99 | max | × one node (p50 / p99) |',
    '|---|---:|---:|---:|---:|---:|',
    `| one node | ${fmt(q.single.count)} | ${fmt(q.single.p50, 2)} ms | ${fmt(q.single.p99, 2)} ms | ${fmt(q.single.max, 2)} ms | 1.00 |`,
    `| cluster node | ${fmt(q.cluster.count)} | ${fmt(q.cluster.p50, 2)} ms | ${fmt(q.cluster.p99, 2)} ms | ${fmt(q.cluster.max, 2)} ms | **${x(q.ratioP50)}** / ${x(q.ratioP99)} |`);
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const base = args.quick ? QUICK : FULL;
  const plan = {
    watchers: args.watchers ? String(args.watchers).split(',').map(Number) : base.watchers,
    flips: args.flips ?? base.flips,
    deaths: args.deaths ?? base.deaths,
    connections: args.connections ?? base.connections,
    users: args.users ?? base.users,
    querySecs: args.querySecs ?? base.querySecs,
  };
  const started = Date.now();
  const result = await run(plan);
  console.log(`\n${markdown(result)}\n\nReproduce: \`${command(plan)}\`\n(took ${fmt((Date.now() - started) / 1000)} s)`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
