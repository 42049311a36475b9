// End-to-end: createPresenceStore on the client in headless Chromium against the real server, with peers on the
// official SDK. What a framework (or a plain page) relies on: a snapshot that stays the same object until something
// in it changed, users that keep their object while their fields do not change, one notification for what one
// task changed, the connection's four states, and no listening once nobody listens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, launchBrowser, startServer, tempDir, sleep } from './harness.mjs';
import { buildSite, openClientPage, startPeer, startRelay } from './client-harness.mjs';

let tmp;
let server;
let relay;
let browser;
let page;
let admin;
const peers = [];

before(async () => {
  tmp = tempDir();
  server = await startServer({ db: join(tmp.dir, 'store.db'), staticDir: buildSite(join(tmp.dir, 'site')) });
  relay = await startRelay(server.port);
  admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
  await admin.upsertUsers(['alice', 'bob', 'carol'].map((id) => ({ id, name: id })));
  browser = await launchBrowser();
  page = await openClientPage(browser, server.url);
  // The page's store, and a record of every notification: which snapshot it was and what it held.
  await page.evaluate(() => {
    window.store = window.createPresenceStore(new window.Client('probe', { baseURL: 'http://127.0.0.1:1' }));
  });
});

after(async () => {
  for (const peer of peers) await peer.stop();
  await browser?.close();
  await relay?.close();
  await server?.stop();
  tmp?.cleanup();
});

/**
 * A new client in the page (its socket through the relay), its store subscribed before anything else, recording
 * each notification in `window.notes`; then alice connects and follows `watched`.
 */
const connect = (watched) => page.evaluate(async ({ relayURL, watched }) => {
  window.client = new window.Client('demo-key', { baseURL: location.origin, wsBaseURL: relayURL });
  window.store = window.createPresenceStore(window.client);
  window.notes = [];
  window.snapshots = [];
  window.unsubscribe = window.store.subscribe(() => {
    const snapshot = window.store.getSnapshot();
    window.snapshots.push(snapshot);
    window.notes.push({ t: Date.now(), connection: snapshot.connection, users: snapshot.users.size });
  });
  await window.client.connectUser({ id: 'alice' }, window.client.devToken('alice'));
  if (watched.length) await window.client.queryUsers({ id: { $in: watched } }, [], { presence: true });
}, { relayURL: relay.url, watched });

const notes = () => page.evaluate(() => window.notes);

/** Waits for a notification since `since` whose snapshot matches `match`. */
async function waitNote(match, since = 0, timeout = 10_000) {
  await page.waitForFunction(
    ({ match, since }) => window.notes.some((n) => n.t >= since && Object.entries(match).every(([k, v]) => n[k] === v)),
    { match, since },
    { timeout, polling: 20 },
  );
}

test('before connecting: disconnected, no users, one snapshot object, and a refused non-client', async () => {
  const result = await page.evaluate(() => {
    const { store } = window;
    const first = store.getSnapshot();
    let refused;
    try {
      window.createPresenceStore({});
    } catch (error) {
      refused = { code: error.code, message: error.message };
    }
    return {
      same: first === store.getSnapshot(),
      frozen: Object.isFrozen(first),
      connection: first.connection,
      me: first.me,
      users: first.users.size,
      server: store.getServerSnapshot().connection,
      serverSame: store.getServerSnapshot() === store.getServerSnapshot(),
      refused,
    };
  });
  assert.deepEqual(result, {
    same: true, frozen: true, connection: 'disconnected', me: null, users: 0, server: 'disconnected',
    serverSame: true, refused: { code: 1000, message: 'createPresenceStore() needs a Client' },
  });
});

test('connecting then connected, with me; users keep their object while their fields do not change', async () => {
  peers.push(await startPeer(server.url, 'bob', ['alice']));
  await connect(['bob', 'carol']);
  await waitNote({ connection: 'connected', users: 3 });
  const states = (await notes()).map((n) => n.connection);
  assert.equal(states[0], 'connecting', `the first notification: ${states}`);
  assert.ok(!states.includes('reconnecting'), `${states}`);

  const check = await page.evaluate(async () => {
    const { store, client } = window;
    const before = store.getSnapshot();
    const count = window.notes.length;
    // The same users again: the client replaces its objects with equal ones; nothing a listener sees changed.
    await client.queryUsers({ id: { $in: ['bob', 'carol'] } }, [], { presence: true });
    await new Promise((done) => setTimeout(done, 100));
    const after = store.getSnapshot();
    return {
      me: before.me?.id,
      bobOnline: before.users.get('bob')?.online,
      carolOnline: before.users.get('carol')?.online,
      sameSnapshot: before === after,
      newObjectsInClient: client.state.users.bob !== before.users.get('bob'),
      notified: window.notes.length - count,
    };
  });
  assert.deepEqual(check, {
    me: 'alice', bobOnline: true, carolOnline: false, sameSnapshot: true, newObjectsInClient: true, notified: 0,
  });

  // carol changes: a new snapshot, a new carol, the same bob.
  const count = (await notes()).length;
  await admin.partialUpdateUser({ id: 'carol', set: { status: 'away for lunch' } });
  const carol = await startPeer(server.url, 'carol', []);
  peers.push(carol);
  await page.waitForFunction(() => window.store.getSnapshot().users.get('carol')?.online === true, null,
    { timeout: 10_000 });
  const changed = await page.evaluate((count) => {
    const [first] = window.snapshots.slice(count - 1);
    const last = window.store.getSnapshot();
    return {
      newSnapshot: first !== last,
      sameBob: first.users.get('bob') === last.users.get('bob'),
      newCarol: first.users.get('carol') !== last.users.get('carol'),
      status: last.users.get('carol').status,
    };
  }, count);
  assert.deepEqual(changed, { newSnapshot: true, sameBob: true, newCarol: true, status: 'away for lunch' });
});

test('what one task changes is one notification: fifty users in one answer', async () => {
  const ids = Array.from({ length: 50 }, (_, i) => `crowd-${i}`);
  await admin.upsertUsers(ids.map((id) => ({ id, name: id })));
  const result = await page.evaluate(async (ids) => {
    const count = window.notes.length;
    const size = window.store.getSnapshot().users.size;
    await window.client.queryUsers({ id: { $in: ids } }, [], { limit: 50 });
    await new Promise((done) => setTimeout(done, 100));
    return { notified: window.notes.length - count, added: window.store.getSnapshot().users.size - size };
  }, ids);
  assert.deepEqual(result, { notified: 1, added: 50 });
});

test('the socket lost: reconnecting, then connected; disconnectUser: disconnected and no users', async () => {
  const since = Date.now();
  relay.cut();
  await waitNote({ connection: 'reconnecting' }, since);
  await waitNote({ connection: 'connected' }, since);
  const states = (await notes()).filter((n) => n.t >= since).map((n) => n.connection);
  assert.deepEqual([...new Set(states)], ['reconnecting', 'connected'], `${states}`);

  await page.evaluate(() => window.client.disconnectUser());
  await waitNote({ connection: 'disconnected', users: 0 }, since);
  const last = await page.evaluate(() => ({ me: window.store.getSnapshot().me, users: window.store.getSnapshot().users.size }));
  assert.deepEqual(last, { me: null, users: 0 });
});

test('unsubscribed, the store stops listening and reads the client when asked', async () => {
  await connect([]);
  const result = await page.evaluate(async () => {
    const store = window.createPresenceStore(window.client);
    const calls = [];
    const unsubscribe = store.subscribe(() => calls.push(store.getSnapshot().users.size));
    await window.client.queryUsers({ id: { $in: ['bob'] } }, [], {});
    await new Promise((done) => setTimeout(done, 50));
    unsubscribe();
    await window.client.queryUsers({ id: { $in: ['carol'] } }, [], {});
    await new Promise((done) => setTimeout(done, 50));
    return { calls, size: store.getSnapshot().users.size };
  });
  assert.deepEqual(result, { calls: [2], size: 3 });
  await page.evaluate(() => window.client.disconnectUser());
  await sleep(50);
  assert.deepEqual(page.problems, []);
});
