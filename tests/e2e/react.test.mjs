// End-to-end: presence-client/react in a real React 19 app (tests/react-app, StrictMode on, built with `vite build`
// in development mode so that StrictMode mounts twice), in headless Chromium against the real server. Alice's page
// shows a roster of bob and carol; bob and carol are the same app in their own browser contexts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT, API_KEY, API_SECRET, closePage, launchBrowser, openConnections, openPage, startServer, tempDir, sleep,
  waitConnections,
} from './harness.mjs';
import { StreamChat } from 'stream-chat';
import { startPeer, userToken } from './client-harness.mjs';

let tmp;
let server;
let browser;
const pages = {};
const peers = [];
/** Users on the official SDK who make the burst: ten of them, each going invisible and back 50 times. */
const CROWD = Array.from({ length: 10 }, (_, i) => `crowd-${i}`);

/**
 * Opens the app as `user`, showing `watch` (the first of them also in a component of its own) and counting who of
 * `crowd` is online.
 */
async function openApp(user, watch, crowd = []) {
  const query = new URLSearchParams({
    key: API_KEY, user, token: userToken(user), watch: watch.join(','), crowd: crowd.join(','),
  });
  const page = await openPage(browser, `${server.url}/index.html?${query}`);
  pages[user] = page;
  await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 15_000 });
  return page;
}

const rowOf = (page, id) => page.locator(`[data-testid="row"][data-user="${id}"]`);

async function waitRow(page, id, attribute, value, timeout = 10_000) {
  await page.waitForSelector(`[data-testid="row"][data-user="${id}"][data-${attribute}="${value}"]`, { timeout });
}

const renders = (page) => page.evaluate(() => ({ ...window.app.renders }));

/** A write by `user` from their own page, through the provider's client. */
const write = (user, set) => pages[user].evaluate(
  ([id, fields]) => window.app.client.partialUpdateUser({ id, set: fields }).then(() => undefined),
  [user, set],
);

before(async () => {
  tmp = tempDir();
  const dist = join(tmp.dir, 'dist');
  execFileSync('node', [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build',
    '--config', join(ROOT, 'tests', 'react-app', 'vite.config.js'), '--outDir', dist, '--minify', 'false'], {
    env: { ...process.env, NODE_ENV: 'development' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server = await startServer({
    db: join(tmp.dir, 'react.db'),
    staticDir: dist,
    admin: true,
    extraArgs: ['--user-writes-per-minute', '0'],
  });
  const admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
  await admin.upsertUsers(['alice', 'bob', 'carol', ...CROWD].map((id) => ({ id, name: id.toUpperCase() })));
  browser = await launchBrowser();
});

after(async () => {
  for (const peer of peers) await peer.stop();
  for (const page of Object.values(pages)) await closePage(page);
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

test('the Vite-built React app connects once under StrictMode: no rejection, no error, one socket', async () => {
  const assets = readdirSync(join(tmp.dir, 'dist', 'assets'));
  assert.ok(assets.some((f) => f.endsWith('.wasm')), `the wasm is an asset of the build: ${assets}`);
  const alice = await openApp('alice', ['bob', 'carol'], CROWD);
  // StrictMode mounted, unmounted and mounted the app again (React's development build).
  assert.equal(await alice.evaluate(() => window.app.mounts), 2);
  await waitConnections(server, 1);
  await sleep(300);
  assert.equal(await openConnections(server), 1, 'the unmount between the two mounts closed nothing and opened nothing');
  // A provider unmounted and mounted again in one commit (a new key) keeps the connection too.
  await alice.evaluate(() => window.app.remount());
  await sleep(300);
  await alice.waitForSelector('[data-testid="connection"][data-state="connected"]');
  assert.equal(await openConnections(server), 1);
  assert.deepEqual(await alice.evaluate(() => ({ sockets: window.app.sockets, clients: window.app.clients.size })),
    { sockets: 1, clients: 1 });
  assert.deepEqual(await alice.evaluate(() => window.app.rejections), []);
  assert.deepEqual(alice.problems, []);
});

test('the roster follows bob and carol live: online, status, last active, and invisible reads as offline', async () => {
  const alice = pages.alice;
  const before = Date.now();
  await openApp('bob', ['alice']);
  await openApp('carol', ['alice']);
  await waitConnections(server, 3);
  // useUsers followed bob and carol (they were unknown): their rows appear, online, once they connect.
  await waitRow(alice, 'bob', 'online', 'true');
  await waitRow(alice, 'carol', 'online', 'true');
  const lastActive = Date.parse(await rowOf(alice, 'bob').getAttribute('data-last-active'));
  assert.ok(lastActive >= before - 2_000 && lastActive <= Date.now() + 2_000, `bob's last_active ${lastActive}`);
  assert.match(await rowOf(alice, 'bob').innerText(), /BOB · .*last active/);
  // Each page followed alice in turn: she is online on theirs.
  await waitRow(pages.bob, 'alice', 'online', 'true');

  await write('bob', { status: 'Eating a veggie burger...' });
  await waitRow(alice, 'bob', 'status', 'Eating a veggie burger...');
  assert.match(await rowOf(alice, 'bob').innerText(), /Eating a veggie burger\.\.\./);

  await write('bob', { invisible: true });
  await waitRow(alice, 'bob', 'online', 'false');
  await alice.waitForSelector('[data-testid="watch-bob"][data-online="false"]');
  await write('bob', { invisible: false });
  await waitRow(alice, 'bob', 'online', 'true');

  // bob leaves: offline for alice, with the roster still showing him.
  await closePage(pages.bob);
  delete pages.bob;
  await waitRow(alice, 'bob', 'online', 'false');
  await waitConnections(server, 2);
  await openApp('bob', ['alice']);
  await waitRow(alice, 'bob', 'online', 'true');
  await waitConnections(server, 3);
  for (const page of Object.values(pages)) {
    assert.deepEqual(await page.evaluate(() => window.app.rejections), []);
    assert.deepEqual(page.problems, []);
  }
});

test('a component watching only bob does not re-render when carol changes', async () => {
  const alice = pages.alice;
  await sleep(200);
  const start = await renders(alice);
  for (const status of ['one', 'two', 'three']) {
    await write('carol', { status });
    await waitRow(alice, 'carol', 'status', status);
  }
  const end = await renders(alice);
  console.log(`renders while carol changed 3 times: roster ${end.roster - start.roster}, bob's watcher ${
    end['watch-bob'] - start['watch-bob']}`);
  assert.ok(end.roster - start.roster >= 3, `the roster rendered carol's changes: ${JSON.stringify({ start, end })}`);
  assert.equal(end['watch-bob'], start['watch-bob'], "bob's watcher rendered nothing");

  await write('bob', { status: 'back' });
  await waitRow(alice, 'bob', 'status', 'back');
  await alice.waitForFunction((count) => window.app.renders['watch-bob'] > count, end['watch-bob']);
});

test('a burst of 1,000 presence events is a bounded number of renders', async () => {
  const alice = pages.alice;
  for (const id of CROWD) peers.push(await startPeer(server.url, id, []));
  await alice.waitForSelector(`[data-testid="crowd"][data-online="${CROWD.length}"]`,
    { state: 'attached', timeout: 10_000 });
  await sleep(200);
  const events = await alice.evaluate(() => window.app.presenceEvents);
  const start = await renders(alice);
  // Each of the crowd goes invisible and visible again 50 times, all at once: 1,000 user.presence.changed at alice.
  const began = Date.now();
  await Promise.all(peers.map(async (peer) => {
    for (let i = 0; i < 50; i++) {
      await peer.client.partialUpdateUser({ id: peer.client.userID, set: { invisible: true } });
      await peer.client.partialUpdateUser({ id: peer.client.userID, set: { invisible: false } });
    }
  }));
  // Until all arrived, or none for 3 s. The server may supersede a presence frame still queued for alice by a newer
  // one of the same user (a consumer behind by a frame or two gets the latest state), so fewer may arrive.
  for (let last = -1, quietSince = Date.now(); ;) {
    const now = await alice.evaluate(() => window.app.presenceEvents);
    if (now - events >= 1_000) break;
    if (now !== last) [last, quietSince] = [now, Date.now()];
    else if (Date.now() - quietSince > 3_000) break;
    await sleep(20);
  }
  await alice.waitForSelector(`[data-testid="crowd"][data-online="${CROWD.length}"]`, { state: 'attached' });
  await sleep(100);
  const end = await renders(alice);
  const { presenceEvents, lastEventAt } = await alice.evaluate(
    () => ({ presenceEvents: window.app.presenceEvents, lastEventAt: window.app.lastEventAt }));
  const received = presenceEvents - events;
  const elapsed = lastEventAt - began;
  const crowd = end.crowd - start.crowd;
  console.log(`burst: ${received} of 1,000 presence events arrived over ${elapsed} ms and rendered the crowd ${crowd} ` +
    `times, the roster ${end.roster - start.roster} times and bob's watcher ${end['watch-bob'] - start['watch-bob']} times`);
  assert.ok(received >= 100 && received <= 1_000, `${received} presence events arrived`);
  // The store tells React at most once per 16 ms: renders are bounded by the burst's duration, not its events (one
  // more for the change at the start of an interval and one for the end).
  const bound = Math.ceil(elapsed / 16) + 2;
  assert.ok(crowd <= bound, `${crowd} renders over ${elapsed} ms (bound ${bound})`);
  assert.ok(crowd < received, `${crowd} renders for ${received} events`);
  assert.equal(end.roster, start.roster, 'the roster (bob and carol) did not render for the crowd');
  assert.equal(end['watch-bob'], start['watch-bob']);
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(await alice.evaluate(() => window.app.rejections), []);
});

test('server rendering: the provider renders disconnected with no users, and nothing touches WebSocket', async () => {
  let sockets = 0;
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = class {
    constructor() {
      sockets++;
      throw new Error('no WebSocket on the server');
    }
  };
  try {
    const { createElement: h } = await import('react');
    const { renderToString } = await import('react-dom/server');
    const { PresenceProvider, useConnectionState, useUser, useUsers } = await import(join(ROOT, 'pkg', 'react.js'));
    function Page() {
      const state = useConnectionState();
      const team = useUsers(['bob', 'carol']);
      const bob = useUser('bob');
      return h('p', { 'data-state': state }, `${team.length} users, bob ${bob === undefined ? 'unknown' : 'known'}`);
    }
    const html = renderToString(h(PresenceProvider,
      { apiKey: API_KEY, baseURL: server.url, user: { id: 'alice' }, tokenOrProvider: userToken('alice') },
      h(Page)));
    assert.equal(html, '<p data-state="disconnected">0 users, bob unknown</p>');
    await sleep(100);
    assert.equal(sockets, 0);
  } finally {
    globalThis.WebSocket = saved;
  }
});
