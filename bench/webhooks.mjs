// Presence webhooks (server/src/webhook) to a local HTTP receiver, against the release server on a SQLite file:
// - throughput and delay: 1,000 users come online (raw WebSockets) and leave (close 1000), then `--rounds`
//   rounds of a status change for each of them (PATCH /users, 100 users a call): every change is one event. The
//   receiver timestamps each; delivered events/s from the first change to the last event, and the delay from
//   each change (the event's `created_at`) to its arrival, p50/p99.
// - outage: the receiver stops for `--outage-secs` while the 1,000 users change status; once it is back, how long
//   the server takes to deliver everything, and whether every user's events arrived in order.
// - fan-out with webhooks on and off: the fan-out benchmark's measure (bench/fanout.mjs: `--watchers` watchers
//   follow one user who flips `--flips` times; the last watcher's p50), on a server with `--webhook-url` and on
//   one without, alternated for `--fanout-rounds` rounds; the median of the rounds' ratios (on / off).
// Usage: node bench/webhooks.mjs [--users 1000] [--rounds 20] [--outage-secs 60] [--watchers 1000] [--flips 30]
//        [--fanout-rounds 3] [--json FILE]
//        (builds nothing: cargo build --release -p presence-server -p presence-loadgen)
import { once } from 'node:events';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { loadgen } from './fanout.mjs';
import {
  API_KEY, connectUrl, fmt, isMain, median, parseArgs, quantile, serverToken, sleep, startServer,
} from './lib.mjs';

/** The receiver: every event with when it arrived; `down()` / `up()` stop and restart it on its port. */
async function startReceiver() {
  const events = [];
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const at = Date.now();
      const event = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      events.push({ at, created: Date.parse(event.created_at), user: event.user.id, status: event.user.status });
      res.writeHead(200).end();
    });
  };
  let http = createServer({ keepAliveTimeout: 60_000 }, handler);
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address();
  return {
    url: `http://127.0.0.1:${port}/hook`,
    events,
    async down() {
      http.closeAllConnections();
      await new Promise((done) => http.close(done));
    },
    async up() {
      http = createServer({ keepAliveTimeout: 60_000 }, handler);
      http.listen(port, '127.0.0.1');
      await once(http, 'listening');
    },
    close() {
      http.closeAllConnections();
      http.close();
    },
  };
}

async function rest(server, token, method, path, body) {
  const r = await fetch(`${server.url}${path}?api_key=${API_KEY}`, {
    method,
    headers: { 'content-type': 'application/json', authorization: token, 'stream-auth-type': 'jwt' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
}

async function waitCount(receiver, count, timeout) {
  const deadline = Date.now() + timeout;
  while (receiver.events.length < count) {
    if (Date.now() > deadline) throw new Error(`the receiver got ${receiver.events.length} of ${count} events`);
    await sleep(20);
  }
}

/** Status changes for every user, `rounds` times, 100 users a call, `tag` in the status. */
async function statusRounds(server, token, ids, rounds, tag) {
  for (let round = 0; round < rounds; round++) {
    for (let at = 0; at < ids.length; at += 100) {
      const users = ids.slice(at, at + 100).map((id) => ({ id, set: { status: `${tag} ${round}` } }));
      await rest(server, token, 'PATCH', '/users', { users });
    }
  }
}

async function throughput({ users, rounds }) {
  const dir = mkdtempSync(join(tmpdir(), 'webhooks-bench-'));
  const receiver = await startReceiver();
  const server = await startServer(['--db', join(dir, 'hooks.db'), '--webhook-url', receiver.url]);
  try {
    const token = serverToken();
    const ids = Array.from({ length: users }, (_, i) => `u${i}`);
    for (let at = 0; at < ids.length; at += 100) {
      const batch = Object.fromEntries(ids.slice(at, at + 100).map((id) => [id, { id }]));
      await rest(server, token, 'POST', '/users', { users: batch });
    }
    await waitCount(receiver, users, 60_000);
    receiver.events.length = 0;

    const started = Date.now();
    const sockets = await Promise.all(ids.map(async (id) => {
      const ws = new WebSocket(connectUrl(server.wsUrl, id));
      await once(ws, 'message');
      return ws;
    }));
    for (const ws of sockets) ws.close(1000);
    await statusRounds(server, token, ids, rounds, 'round');
    const expected = 2 * users + rounds * users;
    await waitCount(receiver, expected, 300_000);
    const last = Math.max(...receiver.events.map((e) => e.at));
    const delays = receiver.events.map((e) => e.at - e.created);
    const result = {
      events: receiver.events.length,
      seconds: (last - started) / 1000,
      perSecond: receiver.events.length / ((last - started) / 1000),
      delayMs: { p50: quantile(delays, 0.5), p99: quantile(delays, 0.99), max: Math.max(...delays) },
    };
    return { result, server, receiver, token, ids, dir };
  } catch (e) {
    await server.stop();
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

async function outageRun(setup, secs) {
  const { server, receiver, token, ids } = setup;
  receiver.events.length = 0;
  await receiver.down();
  const downAt = Date.now();
  await statusRounds(server, token, ids, 3, 'outage');
  const remaining = secs * 1000 - (Date.now() - downAt);
  if (remaining > 0) await sleep(remaining);
  const upAt = Date.now();
  await receiver.up();
  await waitCount(receiver, 3 * ids.length, 300_000);
  const drained = Math.max(...receiver.events.map((e) => e.at)) - upAt;
  // In order per user: each user's statuses arrive as they were set.
  const byUser = new Map();
  let outOfOrder = 0;
  for (const e of receiver.events) {
    const round = Number(e.status.split(' ')[1]);
    if (byUser.has(e.user) && byUser.get(e.user) > round) outOfOrder++;
    byUser.set(e.user, round);
  }
  return { secs, events: receiver.events.length, drainedMs: drained, outOfOrder };
}

async function fanout({ watchers, flips, fanoutRounds }) {
  const receiver = await startReceiver();
  const rounds = [];
  try {
    for (let round = 0; round < fanoutRounds; round++) {
      const measured = {};
      for (const mode of round % 2 ? ['on', 'off'] : ['off', 'on']) {
        const server = await startServer(mode === 'on' ? ['--webhook-url', receiver.url] : []);
        try {
          const out = await loadgen(['fanout', '--server', server.url, '--api-key', API_KEY, '--watchers', String(watchers), '--flips', String(flips)]);
          measured[mode] = out.last_watcher_us.p50;
        } finally {
          await server.stop();
        }
      }
      rounds.push({ on: measured.on, off: measured.off, ratio: measured.on / measured.off });
    }
  } finally {
    receiver.close();
  }
  return {
    watchers,
    flips,
    rounds,
    ratio: median(rounds.map((r) => r.ratio)),
    onMs: median(rounds.map((r) => r.on)) / 1000,
    offMs: median(rounds.map((r) => r.off)) / 1000,
    webhookEvents: receiver.events.length,
  };
}

export async function run({ users = 1000, rounds = 20, outageSecs = 60, watchers = 1000, flips = 30, fanoutRounds = 3 } = {}) {
  const setup = await throughput({ users, rounds });
  let outage;
  try {
    outage = outageSecs > 0 ? await outageRun(setup, outageSecs) : null;
  } finally {
    await setup.server.stop();
    setup.receiver.close();
    rmSync(setup.dir, { recursive: true, force: true });
  }
  const fan = await fanout({ watchers, flips, fanoutRounds });
  return { users, rounds, throughput: setup.result, outage, fanout: fan };
}

export function markdown(r) {
  const t = r.throughput;
  const f = r.fanout;
  const lines = [
    '| measure | result | goal |',
    '|---|---|---|',
    `| delivered to one local receiver (${fmt(t.events)} events: ${fmt(r.users)} users online and offline, ${r.rounds} status rounds) | **${fmt(t.perSecond)} events/s** | ≥ 1,000 events/s: ${t.perSecond >= 1000 ? 'met' : '**missed**'} |`,
    `| delay from the change to the receiver | p50 ${fmt(t.delayMs.p50)} ms, p99 ${fmt(t.delayMs.p99)} ms, max ${fmt(t.delayMs.max)} ms | – |`,
  ];
  if (r.outage) {
    const o = r.outage;
    lines.push(`| receiver down ${fmt(o.secs)} s while ${fmt(o.events)} events were made | all delivered ${fmt(o.drainedMs / 1000, 1)} s after it came back, ${o.outOfOrder} out of order | drained in order: ${o.outOfOrder === 0 ? 'met' : '**missed**'} |`);
  }
  lines.push(`| fan-out to ${fmt(f.watchers)} watchers (last watcher p50), webhooks on / off | ${fmt(f.onMs, 1)} ms / ${fmt(f.offMs, 1)} ms: **${fmt(f.ratio, 2)}×** (rounds: ${f.rounds.map((x) => fmt(x.ratio, 2)).join(', ')}) | ≤ 1.05×: ${f.ratio <= 1.05 ? 'met' : '**missed**'} |`);
  return lines.join('\n');
}

export function print(r) {
  const t = r.throughput;
  console.log(`webhooks to a local receiver: ${r.users} users online and offline, then ${r.rounds} status rounds`);
  console.log(`  ${fmt(t.events)} events in ${fmt(t.seconds, 1)} s: ${fmt(t.perSecond)} events/s delivered`);
  console.log(`  delay from the change to the receiver: p50 ${fmt(t.delayMs.p50)} ms, p99 ${fmt(t.delayMs.p99)} ms, max ${fmt(t.delayMs.max)} ms`);
  if (r.outage) {
    const o = r.outage;
    console.log(`receiver down ${o.secs} s while ${fmt(o.events)} events were made: all delivered ${fmt(o.drainedMs / 1000, 1)} s after it came back, ${o.outOfOrder} out of order`);
  }
  const f = r.fanout;
  console.log(`fan-out to ${f.watchers} watchers, last watcher p50: webhooks on ${fmt(f.onMs, 1)} ms, off ${fmt(f.offMs, 1)} ms: ${fmt(f.ratio, 2)}× (median of ${f.rounds.length} rounds: ${f.rounds.map((x) => fmt(x.ratio, 2)).join(', ')})`);
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run(args);
  print(result);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
}
