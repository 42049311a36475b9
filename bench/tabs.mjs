// Tabs sharing one connection (src/web/share.js), in headless Chromium against the release server:
// - handover: two tabs of one user in one browser context; the leading tab is closed, and the time is taken until
//   the other tab's new socket delivered its first frame (connected) and until its client emitted
//   `connection.recovered` (its subscriptions re-made on the new connection); a new tab joins before the next
//   round. `--rounds` rounds (20).
// - what N tabs cost the server: N tabs of one user (`--tabs`, 10), each following the same `--follow` users (50)
//   with queryUsers({ presence: true }), with sharing on and off, each on a fresh server: its open connections, its
//   presence subscriptions ((connection, user) pairs, the `presence_follows` gauge) and its resident memory above
//   the idle server's. `--runs` runs of each mode (3), alternated; medians.
// Usage: node bench/tabs.mjs [--rounds 20] [--tabs 10] [--follow 50] [--runs 3] [--json FILE]
//        (needs pkg/: bash scripts/build-wasm.sh; target/release/presence-server or PRESENCE_SERVER_BIN; Chromium)
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  API_KEY, CHROMIUM, CHROMIUM_ARGS, ROOT, fmt, isMain, median, parseArgs, quantile, serverToken, sleep, startServer,
} from './lib.mjs';

// The page: the package, and a record of every real socket (when it was made, when its first frame came).
const PAGE = `<!doctype html><meta charset="utf-8"><script>
  window.sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url) {
      super(url);
      const entry = { createdAt: Date.now(), firstAt: null, closedAt: null };
      window.sockets.push(entry);
      this.addEventListener('message', () => { entry.firstAt ??= Date.now(); });
      this.addEventListener('close', () => { entry.closedAt = Date.now(); });
    }
  };
</script><script type="module">
  import { Client } from './pkg/presence_client.js';
  window.Client = Client;
  window.ready = true;
</script>`;

function site() {
  const dir = mkdtempSync(join(tmpdir(), 'tabs-bench-'));
  cpSync(join(ROOT, 'pkg'), join(dir, 'pkg'), { recursive: true });
  writeFileSync(join(dir, 'index.html'), PAGE);
  return dir;
}

async function metric(server, name) {
  const text = await (await fetch(`${server.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line.split(' ')[1]);
}

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

async function seed(server, ids) {
  const body = JSON.stringify({ users: Object.fromEntries(ids.map((id) => [id, { id }])) });
  const token = serverToken();
  const answer = await fetch(`${server.url}/users?api_key=${API_KEY}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: token, 'stream-auth-type': 'jwt' },
    body,
  });
  if (!answer.ok) throw new Error(`upsert: ${answer.status} ${await answer.text()}`);
}

/** A tab of `context` with alice connected, following `follow`; `share`: the shareConnection option. */
async function tab(context, server, follow, share = true) {
  const page = await context.newPage();
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(async ({ baseURL, apiKey, follow, share }) => {
    const client = new window.Client(apiKey, { baseURL, shareConnection: share });
    window.client = client;
    window.recovered = [];
    client.on('connection.recovered', () => window.recovered.push(Date.now()));
    await client.connectUser({ id: 'alice' }, client.devToken('alice'));
    if (follow.length) await client.queryUsers({ id: { $in: follow } }, [], { presence: true, limit: 100 });
  }, { baseURL: server.url, apiKey: API_KEY, follow, share });
  return page;
}

const liveSockets = (page) => page.evaluate(() => window.sockets.filter((s) => s.closedAt === null).length);

async function handover(browser, server, rounds, follow) {
  const context = await browser.newContext();
  let tabs = [await tab(context, server, follow), await tab(context, server, follow)];
  const connected = [];
  const recovered = [];
  for (let round = 0; round < rounds; round++) {
    const counts = await Promise.all(tabs.map(liveSockets));
    const leader = tabs[counts.indexOf(1)];
    const follower = tabs.find((page) => page !== leader);
    const closedAt = Date.now();
    await leader.close();
    await follower.waitForFunction(
      (since) => window.sockets.some((s) => s.createdAt >= since && s.firstAt !== null)
        && window.recovered.some((t) => t >= since),
      closedAt,
      { polling: 10, timeout: 15_000 },
    );
    const { firstAt, recoveredAt } = await follower.evaluate((since) => ({
      firstAt: window.sockets.find((s) => s.createdAt >= since).firstAt,
      recoveredAt: window.recovered.find((t) => t >= since),
    }), closedAt);
    connected.push(firstAt - closedAt);
    recovered.push(recoveredAt - closedAt);
    tabs = [follower, await tab(context, server, follow)];
  }
  await context.close();
  return { connected, recovered };
}

async function cost(browser, tabsCount, follow, share) {
  const server = await startServer(['--admin-addr', '127.0.0.1:0', '--static-dir', siteDir]);
  try {
    await seed(server, ['alice', ...follow]);
    await sleep(500);
    const idle = rssKiB(server.pid);
    const context = await browser.newContext();
    for (let i = 0; i < tabsCount; i++) await tab(context, server, follow, share);
    await sleep(1_000);
    const result = {
      connections: await metric(server, 'presence_open_connections'),
      follows: await metric(server, 'presence_follows'),
      rssKiB: rssKiB(server.pid) - idle,
    };
    await context.close();
    return result;
  } finally {
    await server.stop();
  }
}

let siteDir;

export async function run({ rounds = 20, tabs = 10, follow = 50, runs = 3 } = {}) {
  siteDir = site();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const followed = Array.from({ length: follow }, (_, i) => `u${i}`);
    const server = await startServer(['--static-dir', siteDir]);
    let times;
    try {
      await seed(server, ['alice', ...followed]);
      times = await handover(browser, server, rounds, followed);
    } finally {
      await server.stop();
    }
    const modes = { shared: [], own: [] };
    for (let i = 0; i < runs; i++) {
      modes.shared.push(await cost(browser, tabs, followed, true));
      modes.own.push(await cost(browser, tabs, followed, false));
    }
    const summary = (list) => ({
      connections: median(list.map((r) => r.connections)),
      follows: median(list.map((r) => r.follows)),
      rssKiB: median(list.map((r) => r.rssKiB)),
    });
    return {
      rounds,
      follow,
      tabs,
      runs,
      handover: {
        connectedMs: { p50: quantile(times.connected, 0.5), max: Math.max(...times.connected), all: times.connected },
        recoveredMs: { p50: quantile(times.recovered, 0.5), max: Math.max(...times.recovered), all: times.recovered },
      },
      shared: { ...summary(modes.shared), runs: modes.shared },
      own: { ...summary(modes.own), runs: modes.own },
    };
  } finally {
    await browser.close();
    rmSync(siteDir, { recursive: true, force: true });
  }
}

export function print(r) {
  console.log(`handover, ${r.rounds} rounds (leader tab closed -> the other tab's new socket delivered its first frame;`);
  console.log(`  -> its client re-subscribed ${r.follow} users and emitted connection.recovered):`);
  console.log(`  connected  p50 ${fmt(r.handover.connectedMs.p50)} ms  max ${fmt(r.handover.connectedMs.max)} ms`);
  console.log(`  recovered  p50 ${fmt(r.handover.recoveredMs.p50)} ms  max ${fmt(r.handover.recoveredMs.max)} ms`);
  console.log(`${r.tabs} tabs of one user, each following ${r.follow} users (medians of ${r.runs} runs each):`);
  console.log('  mode            connections  presence subscriptions  server RSS above idle');
  for (const [name, m] of [['shared', r.shared], ['own socket', r.own]]) {
    console.log(`  ${name.padEnd(15)} ${String(m.connections).padStart(11)}  ${String(m.follows).padStart(22)}  ${fmt(m.rssKiB)} KiB`);
  }
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run(args);
  print(result);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
}
