// End-to-end: batched delivery in headless Chromium against the real server. Our client asks for `batch_ms=10` by
// default: a burst of peers coming online (official SDK clients in Node) reaches the page in fewer WebSocket
// messages than events, and its listeners still get every event on its own, in order, with its usual shape, while
// its state-change listeners hear once per message.
// `batchMs: 0` asks for nothing: one message per event, as the official SDK gets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, launchBrowser, startServer, tempDir } from './harness.mjs';
import { buildSite, openClientPage, startPeer } from './client-harness.mjs';

const PEERS = 30;

let tmp;
let server;
let browser;
const peers = [];

before(async () => {
  tmp = tempDir();
  server = await startServer({ db: join(tmp.dir, 'batching.db'), staticDir: buildSite(join(tmp.dir, 'site')) });
  const admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
  const ids = ['viewer', 'plain', ...Array.from({ length: 2 * PEERS }, (_, i) => `p${i}`)];
  await admin.upsertUsers(ids.map((id) => ({ id })));
  browser = await launchBrowser();
});

after(async () => {
  await Promise.all(peers.map((peer) => peer.stop()));
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

/** A page whose client (options: `batchMs`) connects `userId` and follows `watched`; every event is recorded. */
async function watcher(userId, watched, options) {
  const page = await openClientPage(browser, server.url);
  await page.evaluate(async ({ apiKey, baseURL, userId, watched, options }) => {
    const client = new window.Client(apiKey, { baseURL, ...options });
    window.client = client;
    window.presence = [];
    client.on('user.presence.changed', (event) => {
      if (event.user.id === userId) return;
      window.presence.push({
        user: event.user.id,
        online: event.user.online,
        receivedAt: event.received_at instanceof Date,
        createdAt: typeof event.created_at === 'string',
        cached: client.state.users[event.user.id]?.online === event.user.online,
      });
    });
    await client.connectUser({ id: userId }, client.devToken(userId));
    window.stateChanges = 0;
    client.onStateChange(() => {
      window.stateChanges += 1;
    });
    await client.queryUsers({ id: { $in: watched } }, [], { presence: true, limit: 100 });
  }, { apiKey: API_KEY, baseURL: server.url, userId, watched, options });
  return page;
}

async function burst(page, ids) {
  const before = await page.evaluate(() => ({ messages: window.sockets.at(-1).messages, changes: window.stateChanges }));
  const started = await Promise.all(ids.map((id) => startPeer(server.url, id, [])));
  peers.push(...started);
  await page.waitForFunction(
    (count) => window.presence.filter((e) => e.online).length >= count,
    ids.length,
    { timeout: 10_000 },
  );
  return page.evaluate((before) => ({
    presence: window.presence,
    messages: window.sockets.at(-1).messages - before.messages,
    stateChanges: window.stateChanges - before.changes,
    url: window.sockets.at(-1).url,
  }), before);
}

test('a burst of presence events arrives in fewer messages, every event still on its own and in order', async () => {
  const ids = Array.from({ length: PEERS }, (_, i) => `p${i}`);
  const page = await watcher('viewer', ids, {});
  const seen = await burst(page, ids);
  assert.match(seen.url, /[?&]batch_ms=10(&|$)/);
  const online = seen.presence.filter((e) => e.online);
  assert.deepEqual(online.map((e) => e.user).sort(), [...ids].sort(), 'each peer once');
  for (const event of online) {
    assert.deepEqual(event, { ...event, receivedAt: true, createdAt: true, cached: true }, JSON.stringify(event));
  }
  console.log(`batched: ${online.length} presence events in ${seen.messages} messages`);
  assert.ok(seen.messages < online.length, `${online.length} events came in ${seen.messages} messages`);
  // The state-change listeners (and so the store) hear once per message, not once per event.
  assert.ok(
    seen.stateChanges > 0 && seen.stateChanges <= seen.messages,
    `${seen.stateChanges} state changes for ${seen.messages} messages`,
  );
  assert.deepEqual(page.problems, []);
});

test('batchMs: 0 asks for no batching: one message per event', async () => {
  const ids = Array.from({ length: PEERS }, (_, i) => `p${PEERS + i}`);
  const page = await watcher('plain', ids, { batchMs: 0 });
  const seen = await burst(page, ids);
  assert.doesNotMatch(seen.url, /batch_ms/);
  const online = seen.presence.filter((e) => e.online);
  assert.equal(online.length, PEERS);
  assert.ok(seen.messages >= PEERS, `${PEERS} events in ${seen.messages} messages`);
  assert.ok(seen.stateChanges >= PEERS, `${seen.stateChanges} state changes for ${PEERS} events`);
  await assert.rejects(
    page.evaluate(() => new window.Client('k', { batchMs: 51 })),
    /batchMs must be from 0/,
  );
  assert.deepEqual(page.problems, []);
});
