// Detection: how long a peer keeps seeing a user online after the user leaves, with the server's default timing.
// - graceful: the client closes its socket with 1000 (what `disconnectUser()` does); sequential runs.
// - silent death: the client's connection goes through a local TCP proxy that stops forwarding in both
//   directions without closing anything (a frozen tab, a laptop that lost its network, a crashed process whose
//   socket stayed open). Several such clients freeze at random moments spread over one server ping interval, all
//   watched by the same peer, so the samples cover every phase of the server's ping timer.
// The peer subscribes with `queryUsers(..., { presence: true })` and timestamps `user.presence.changed`.
// Usage: node bench/detection.mjs [--graceful-runs 100] [--silent-runs 30] [--json FILE]
//        (starts target/release/presence-server, or PRESENCE_SERVER_BIN, on a free loopback port)
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import WebSocket from 'ws';
import { API_KEY, connectUrl, devToken, fmt, isMain, parseArgs, quantile, sleep, startServer } from './lib.mjs';

/** Opens a raw protocol connection for `id` to `wsBase`; resolves with the socket and its connection id. */
async function open(wsBase, id) {
  const ws = new WebSocket(connectUrl(wsBase, id));
  const [hello] = await once(ws, 'message', { signal: AbortSignal.timeout(15_000) });
  const frame = JSON.parse(hello);
  if (!frame.connection_id) throw new Error(`${id}: no connection_id in the first frame: ${hello}`);
  return { ws, connectionId: frame.connection_id };
}

/** A peer connection that follows the presence of `ids`; `waitFor(id, online)` resolves with the arrival time. */
async function peer(server, ids) {
  const { ws, connectionId } = await open(server.wsUrl, 'watcher');
  const waiters = new Map();
  ws.on('message', (raw) => {
    const event = JSON.parse(raw);
    if (event.type !== 'user.presence.changed') return;
    const key = `${event.user.id}:${event.user.online}`;
    const waiter = waiters.get(key);
    if (waiter) {
      waiters.delete(key);
      waiter(performance.now());
    }
  });
  const payload = encodeURIComponent(JSON.stringify({ filter_conditions: { id: { $in: ids } }, presence: true, limit: 100 }));
  const answer = await fetch(`${server.url}/users?api_key=${API_KEY}&user_id=watcher&connection_id=${connectionId}&payload=${payload}`,
    { headers: { Authorization: devToken('watcher'), 'stream-auth-type': 'jwt' } }).then((r) => r.json());
  const online = new Map((answer.users || []).map((u) => [u.id, u.online]));
  return {
    online,
    /** Resolves with the time `id` is reported with `online`; rejects after `timeoutMs`. */
    waitFor(id, isOnline, timeoutMs) {
      return new Promise((done, fail) => {
        const timer = setTimeout(() => fail(new Error(`${id} not seen online=${isOnline} within ${timeoutMs} ms`)), timeoutMs);
        waiters.set(`${id}:${isOnline}`, (t) => { clearTimeout(timer); done(t); });
      });
    },
    close: () => ws.close(1000),
  };
}

/** Graceful disconnect, `runs` times in a row: from the close to the peer's offline event. */
async function graceful(server, runs) {
  const first = await open(server.wsUrl, 'leaver');
  const watcher = await peer(server, ['leaver']);
  if (watcher.online.get('leaver') !== true) throw new Error('the leaving user is not online to start with');
  const samples = [];
  let current = first;
  for (let i = 0; i < runs; i++) {
    if (i > 0) {
      const back = watcher.waitFor('leaver', true, 10_000);
      current = await open(server.wsUrl, 'leaver');
      await back;
    }
    const seen = watcher.waitFor('leaver', false, 10_000);
    const closed = once(current.ws, 'close', { signal: AbortSignal.timeout(15_000) }); // may come before the peer's event
    const t0 = performance.now();
    current.ws.close(1000);
    samples.push((await seen) - t0);
    await closed;
  }
  watcher.close();
  return samples;
}

/** A TCP proxy whose connections can be frozen: no byte forwarded either way, nothing closed. */
async function freezingProxy(targetPort) {
  const pairs = [];
  const proxy = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => { client.destroy(); upstream.destroy(); };
    client.on('error', drop);
    upstream.on('error', drop);
    pairs.push({ client, upstream });
  });
  await new Promise((done) => proxy.listen(0, '127.0.0.1', done));
  return {
    port: proxy.address().port,
    /** Freezes the connection opened n-th (0-based). */
    freeze(n) {
      const { client, upstream } = pairs[n];
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    },
    close() {
      for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); }
      proxy.close();
    },
  };
}

/** Silent death of `runs` clients, frozen at random moments over `spreadMs`: from the freeze to the offline event. */
async function silent(server, runs, spreadMs) {
  const proxy = await freezingProxy(Number(new URL(server.url).port));
  const ids = Array.from({ length: runs }, (_, i) => `frozen-${i}`);
  const sockets = [];
  for (const id of ids) sockets.push(await open(`ws://127.0.0.1:${proxy.port}`, id)); // n-th proxy pair = n-th id
  const watcher = await peer(server, ids);
  for (const id of ids) if (watcher.online.get(id) !== true) throw new Error(`${id} is not online to start with`);
  const samples = await Promise.all(ids.map(async (id, n) => {
    await sleep(Math.random() * spreadMs);
    const seen = watcher.waitFor(id, false, 60_000);
    const t0 = performance.now();
    proxy.freeze(n);
    return (await seen) - t0;
  }));
  watcher.close();
  for (const { ws } of sockets) ws.terminate();
  proxy.close();
  return samples;
}

const summary = (samples) => ({
  runs: samples.length, p50: quantile(samples, 0.5), p95: quantile(samples, 0.95), max: Math.max(...samples), samples,
});

/** The server's defaults, as documented in README.md; the silent case depends on them. */
export const DEFAULTS = { pingIntervalMs: 5000, pongTimeoutMs: 10000, offlineGraceMs: 3000 };

export async function run({ gracefulRuns = 100, silentRuns = 30, log = console.log } = {}) {
  const server = await startServer();
  try {
    const g = summary(await graceful(server, gracefulRuns));
    log(`graceful: p50 ${fmt(g.p50, 1)} ms, p95 ${fmt(g.p95, 1)} ms over ${g.runs} runs`);
    const s = summary(await silent(server, silentRuns, DEFAULTS.pingIntervalMs));
    log(`silent death: p50 ${fmt(s.p50)} ms, p95 ${fmt(s.p95)} ms, max ${fmt(s.max)} ms over ${s.runs} clients`);
    return { graceful: g, silent: s, defaults: DEFAULTS };
  } finally {
    await server.stop();
  }
}

export function markdown({ graceful: g, silent: s, defaults: d }) {
  return [
    `Server defaults: ping every ${fmt(d.pingIntervalMs)} ms, pong timeout ${fmt(d.pongTimeoutMs)} ms, offline grace ${fmt(d.offlineGraceMs)} ms (abnormal ends only).`,
    '',
    '| how the client leaves | runs | p50 | p95 | max | goal | met |',
    '|---|---:|---:|---:|---:|---|---|',
    `| graceful (close 1000, as \`disconnectUser()\`) | ${g.runs} | ${fmt(g.p50, 1)} ms | ${fmt(g.p95, 1)} ms | ${fmt(g.max, 1)} ms | p95 ≤ 1 s | ${g.p95 <= 1000 ? 'yes' : '**no**'} |`,
    `| silent death (proxy stops forwarding, nothing closed) | ${s.runs} | ${fmt(s.p50)} ms | ${fmt(s.p95)} ms | ${fmt(s.max)} ms | ≤ 20 s | ${s.max <= 20000 ? 'yes' : '**no**'} |`,
  ].join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({ gracefulRuns: args.gracefulRuns ?? 100, silentRuns: args.silentRuns ?? 30 });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
