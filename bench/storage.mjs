// Storage write load of connected users doing nothing (table 8): N users connect and send the client's keep-alive
// `health.check` every 25 s, each `last_active` refresh interval of 15 minutes — both on a time scale, so that one
// simulated hour takes 3,600 s / scale. The server runs on a SQLite file with its admin address on; its
// `/metrics` counters `presence_store_writes_total` (rows written) and `presence_store_commits_total`
// (transactions, one fsync each) are read after every user is connected and again at the end of the window, before
// anyone leaves; the connects and the disconnects are counted apart.
// Two configurations in one run: the server's default (`--last-active-refresh-ms` 15 min, scaled) and every ping
// written (`--last-active-refresh-ms 0`: what the server did before the refresh interval existed).
// Usage: node bench/storage.mjs [--users 1000] [--scale 100] [--hours 2] [--json FILE]
//        (builds nothing: cargo build --release -p presence-server)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { connectUrl, fmt, isMain, parseArgs, sleep, startServer } from './lib.mjs';

/** The client's keep-alive interval and the server's default refresh interval, in real (unscaled) time. */
const PING_MS = 25_000;
const REFRESH_MS = 15 * 60 * 1000;

async function counters(adminUrl) {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const read = (name) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return { writes: read('presence_store_writes_total'), commits: read('presence_store_commits_total') };
}

/** Waits (bounded) until `adminUrl`'s counters stop moving: the last writes of a phase are committed. */
async function settled(adminUrl) {
  let last = await counters(adminUrl);
  for (let i = 0; i < 50; i++) {
    await sleep(200);
    const now = await counters(adminUrl);
    if (now.writes === last.writes) return now;
    last = now;
  }
  return last;
}

/** One connected user; once started, it pings every `pingMs` (the first at a random point of the first interval). */
function client(wsUrl, id, pingMs) {
  return new Promise((done, fail) => {
    const ws = new WebSocket(connectUrl(wsUrl, id));
    let timer;
    let pings = 0;
    const ping = () => {
      pings++;
      ws.send(JSON.stringify([{ type: 'health.check', client_id: `${id}--bench` }]));
    };
    ws.once('message', (data) => {
      const first = JSON.parse(String(data));
      if (!first.connection_id) return fail(new Error(`${id}: refused: ${data}`));
      done({
        start: () => {
          timer = setTimeout(function tick() {
            ping();
            timer = setTimeout(tick, pingMs);
          }, Math.random() * pingMs);
        },
        pings: () => pings,
        close: () => new Promise((closed) => {
          clearTimeout(timer);
          ws.once('close', closed);
          ws.close(1000);
        }),
      });
    });
    ws.once('error', fail);
  });
}

/** One configuration: connect every user, let them ping for `hours` simulated hours, then leave. */
async function once({ users, scale, hours, refreshMs }) {
  const dir = mkdtempSync(join(tmpdir(), 'presence-storage-'));
  const server = await startServer(['--db', join(dir, 'presence.db'), '--admin-addr', '127.0.0.1:0',
    '--last-active-refresh-ms', String(refreshMs)]);
  try {
    const pingMs = PING_MS / scale;
    const start = await counters(server.adminUrl);
    const clients = [];
    for (let i = 0; i < users; i += 100) {
      const ids = Array.from({ length: Math.min(100, users - i) }, (_, k) => `idle-${i + k}`);
      clients.push(...await Promise.all(ids.map((id) => client(server.wsUrl, id, pingMs))));
    }
    // Every user is in (each connect answered, so written): the pings start, and with them the window.
    const connected = await settled(server.adminUrl);
    for (const c of clients) c.start();
    const windowMs = (hours * 3_600_000) / scale;
    await sleep(windowMs);
    const end = await counters(server.adminUrl);
    const pings = clients.reduce((n, c) => n + c.pings(), 0);
    await Promise.all(clients.map((c) => c.close()));
    const left = await settled(server.adminUrl);
    const perUserHour = (end.writes - connected.writes) / (users * hours);
    return {
      refreshMs,
      users,
      scale,
      hours,
      pingMs,
      pings,
      pingsPerUserHour: pings / (users * hours),
      connectWrites: connected.writes - start.writes,
      windowWrites: end.writes - connected.writes,
      windowCommits: end.commits - connected.commits,
      disconnectWrites: left.writes - end.writes,
      writesPerUserHour: perUserHour,
      commitsPerHour: (end.commits - connected.commits) / hours,
      // What the same users would cost in real time.
      writesPerSecAt20k: (perUserHour * 20_000) / 3_600,
    };
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run({ users = 1000, scale = 100, hours = 2, log = console.log } = {}) {
  const rows = [];
  for (const [name, refreshMs] of [['every ping written (before)', 0], ['refresh every 15 min (now)', REFRESH_MS / scale]]) {
    const r = await once({ users, scale, hours, refreshMs });
    log(`storage (${name}): ${fmt(r.writesPerUserHour, 2)} writes per connected user-hour over ${fmt(r.pings)} pings, ${fmt(r.connectWrites / users, 2)} per connect, ${fmt(r.disconnectWrites / users, 2)} per disconnect`);
    rows.push({ name, ...r });
  }
  return { users, scale, hours, rows, goalMet: rows[1].writesPerUserHour <= 4 };
}

export function markdown({ users, scale, hours, rows }) {
  const lines = [
    `${fmt(users)} connected users, ${hours} simulated hour(s) at a time scale of ${scale} (a ping every ${fmt(PING_MS / scale)} ms`,
    `for the client's 25 s, a refresh interval of ${fmt(REFRESH_MS / scale / 1000, 1)} s for 15 min), SQLite file database.`,
    '',
    '| server | pings per user-hour | writes per connected user-hour | transactions per hour (all users) | writes per connect | writes per disconnect | 20,000 users: writes/s | goal ≤ 4 per user-hour |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    const now = r.refreshMs !== 0;
    lines.push(`| ${r.name} | ${fmt(r.pingsPerUserHour, 1)} | **${fmt(r.writesPerUserHour, 2)}** | ${fmt(r.commitsPerHour)} | ${fmt(r.connectWrites / r.users, 2)} | ${fmt(r.disconnectWrites / r.users, 2)} | ${fmt(r.writesPerSecAt20k, 1)} | ${now ? (r.writesPerUserHour <= 4 ? 'met' : '**missed**') : '–'} |`);
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({ users: args.users ?? 1000, scale: args.scale ?? 100, hours: args.hours ?? 2 });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
