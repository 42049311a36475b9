// End-to-end: presence webhooks from the real server to a real HTTP receiver in this process. Users connect with
// raw WebSockets (their close codes chosen by the test); the official `stream-chat` SDK verifies every signature
// and changes the app's settings; the server is killed (SIGKILL) and restarted on its database.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { once } from 'node:events';
import WebSocket from 'ws';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, sleep, startServer, tempDir } from './harness.mjs';

const GRACE_MS = 1_500;

let tmp;
let receiver;
let server;
let admin;

/**
 * An HTTP receiver on a loopback port: records every request ({ t, id, attempt, signature, apiKey, body, event,
 * status }) and answers `status` (200 unless told otherwise); `down()` stops listening (connections refused),
 * `up()` listens again on the same port.
 */
async function startReceiver() {
  const requests = [];
  let status = 200;
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({
        t: Date.now(),
        id: req.headers['x-webhook-id'],
        attempt: Number(req.headers['x-webhook-attempt']),
        signature: req.headers['x-signature'],
        apiKey: req.headers['x-api-key'],
        contentType: req.headers['content-type'],
        body,
        event: JSON.parse(body),
        status,
      });
      res.writeHead(status).end();
    });
  };
  let http = createServer(handler);
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address();
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    setStatus: (s) => { status = s; },
    /** The acknowledged requests (2xx) about `user` since `since`. */
    delivered: (user, since = 0) => requests.filter((r) => r.status < 300 && r.event.user?.id === user && r.t >= since),
    async down() {
      http.closeAllConnections();
      await new Promise((done) => http.close(done));
    },
    async up() {
      http = createServer(handler);
      http.listen(port, '127.0.0.1');
      await once(http, 'listening');
    },
    async close() {
      http.closeAllConnections();
      await new Promise((done) => http.close(done));
    },
  };
}

/** Waits (bounded) for `check()` to give a value other than undefined, null, false or an empty array. */
async function waitFor(what, check, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = check();
    if (value && !(Array.isArray(value) && value.length === 0)) return value;
    if (Date.now() > deadline) assert.fail(`${what} within ${timeout} ms`);
    await sleep(50);
  }
}

/** A raw connection of `user` (dev token); `close(code)` ends it with that code. */
async function connect(base, user, details = {}) {
  const json = encodeURIComponent(JSON.stringify({ user_id: user, user_details: { id: user, ...details } }));
  const token = `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.${Buffer.from(JSON.stringify({ user_id: user })).toString('base64')}.devtoken`;
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/connect?json=${json}&api_key=${API_KEY}&authorization=${token}&stream-auth-type=jwt`);
  const [first] = await once(ws, 'message');
  assert.equal(JSON.parse(first).type, 'health.check');
  return {
    async close(code) {
      ws.close(code);
      await once(ws, 'close');
    },
  };
}

/** The presence/update story of `user` as the receiver got it: [type, online, status]. */
const story = (user, since) => receiver.delivered(user, since).map((r) => [r.event.type, r.event.user.online, r.event.user.status ?? null]);

/** Starts the server on the test's database, sending webhooks to the receiver, and its server-side client. */
async function serve() {
  server = await startServer({
    db: join(tmp.dir, 'hooks.db'),
    graceMs: GRACE_MS,
    extraArgs: ['--webhook-url', receiver.url],
  });
  admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
}

before(async () => {
  tmp = tempDir();
  receiver = await startReceiver();
  await serve();
  const ids = ['alice', 'bob', 'carol', 'dave', 'erin'];
  await admin.upsertUsers(ids.map((id) => ({ id, name: id })));
  // Creating a user is an update of it: each one's user.updated arrives before the tests start.
  await waitFor('the users created', () => ids.every((id) => receiver.delivered(id).length === 1), 5_000);
  for (const id of ids) assert.deepEqual(story(id, 0), [['user.updated', false, null]]);
});

after(async () => {
  await server?.stop();
  await receiver?.close();
  tmp?.cleanup();
});

test('online, status and offline arrive once each, in order, signed as the official SDK verifies', async () => {
  const since = Date.now();
  const a1 = await connect(server.url, 'alice');
  const a2 = await connect(server.url, 'alice');
  await admin.partialUpdateUser({ id: 'alice', set: { status: 'Eating a veggie burger...' } });
  await a1.close(1000);
  await a2.close(1000);
  await waitFor('alice offline', () => story('alice', since).length >= 3, 10_000);
  await sleep(500);
  assert.deepEqual(story('alice', since), [
    ['user.presence.changed', true, null],
    ['user.updated', true, 'Eating a veggie burger...'],
    ['user.presence.changed', false, 'Eating a veggie burger...'],
  ]);
  for (const r of receiver.delivered('alice', since)) {
    assert.equal(admin.verifyWebhook(r.body, r.signature), true, `signature of ${r.body}`);
    assert.equal(admin.verifyWebhook(`${r.body} `, r.signature), false, 'a changed body does not verify');
    assert.equal(r.apiKey, API_KEY);
    assert.equal(r.contentType, 'application/json');
    assert.equal(r.attempt, 1);
    assert.match(r.id, /^[0-9a-f-]{36}$/);
    assert.ok(r.event.created_at && r.event.user.last_active, r.body);
  }
  assert.equal(new Set(receiver.delivered('alice', since).map((r) => r.id)).size, 3, 'one id per event');
});

test('a reconnect within the grace sends nothing; an abnormal end sends offline after the grace', async () => {
  const since = Date.now();
  const first = await connect(server.url, 'bob');
  await waitFor('bob online', () => story('bob', since).length === 1, 5_000);
  await first.close(4001);
  await sleep(GRACE_MS / 3);
  const again = await connect(server.url, 'bob');
  await sleep(GRACE_MS + 1_000);
  assert.deepEqual(story('bob', since), [['user.presence.changed', true, null]]);
  const leftAt = Date.now();
  await again.close(4001);
  const [offline] = await waitFor('bob offline', () => receiver.delivered('bob', leftAt), 5_000);
  assert.equal(offline.event.user.online, false);
  assert.ok(offline.t - leftAt >= GRACE_MS - 200, `offline ${offline.t - leftAt} ms after the close`);
});

test('invisible reads as offline, and nothing of the invisible session is sent', async () => {
  const since = Date.now();
  const conn = await connect(server.url, 'carol');
  await admin.partialUpdateUser({ id: 'carol', set: { invisible: true } });
  await admin.partialUpdateUser({ id: 'carol', set: { status: 'hiding' } });
  await admin.partialUpdateUser({ id: 'carol', set: { invisible: false } });
  await waitFor('carol visible again', () => story('carol', since).length >= 3, 5_000);
  await sleep(500);
  assert.deepEqual(story('carol', since), [
    ['user.presence.changed', true, null],
    ['user.presence.changed', false, null],
    ['user.presence.changed', true, 'hiding'],
  ]);
  const hidden = receiver.delivered('carol', since)[1].event.user;
  assert.equal(hidden.invisible, undefined, 'the public view tells nothing of invisibility');
  await conn.close(1000);
});

test('a receiver down for 20 s gets everything afterwards, in order, the retried ones with attempt > 1', async () => {
  await receiver.down();
  const since = Date.now();
  const conn = await connect(server.url, 'dave');
  for (const status of ['one', 'two', 'three']) {
    await admin.partialUpdateUser({ id: 'dave', set: { status } });
  }
  await conn.close(1000);
  await sleep(20_000);
  await receiver.up();
  await waitFor('dave delivered', () => story('dave', since).length >= 5, 60_000);
  assert.deepEqual(story('dave', since), [
    ['user.presence.changed', true, null],
    ['user.updated', true, 'one'],
    ['user.updated', true, 'two'],
    ['user.updated', true, 'three'],
    ['user.presence.changed', false, 'three'],
  ]);
  const first = receiver.delivered('dave', since)[0];
  assert.ok(first.attempt > 1, `the first event came on attempt ${first.attempt}`);
  const metrics = await fetch(`${server.url}/metrics`);
  assert.equal(metrics.status, 404, 'metrics are on the admin address only');
});

test('kill -9 between the change and its delivery loses nothing: the restarted server delivers it', async () => {
  receiver.setStatus(503);
  const since = Date.now();
  await admin.partialUpdateUser({ id: 'erin', set: { status: 'before the crash' } });
  const refused = await waitFor('a refused attempt', () => receiver.requests.find((r) => r.t >= since && r.event.user?.id === 'erin'), 5_000);
  await server.kill();
  receiver.setStatus(200);
  await serve();
  const [delivered] = await waitFor('erin delivered after the restart', () => receiver.delivered('erin', since), 10_000);
  assert.equal(delivered.id, refused.id, 'the same event, by its X-Webhook-Id');
  assert.equal(delivered.event.user.status, 'before the crash');
  assert.equal(admin.verifyWebhook(delivered.body, delivered.signature), true);
});

test('PATCH /app sets the webhook URL (stored: it survives a restart); an empty one falls back to the flag', async () => {
  const other = await startReceiver();
  try {
    await admin.updateAppSettings({ webhook_url: other.url });
    const { app } = await admin.getAppSettings();
    assert.equal(app.webhook_url, other.url);
    await server.stop();
    await serve();
    const since = Date.now();
    await admin.partialUpdateUser({ id: 'erin', set: { status: 'to the other receiver' } });
    await waitFor('the other receiver', () => other.delivered('erin', since).length === 1, 5_000);
    assert.deepEqual(receiver.delivered('erin', since), []);

    const user = new StreamChat(API_KEY, { baseURL: server.url, timeout: 5000, allowServerSideConnect: true });
    user.logger = () => {};
    await user.connectUser({ id: 'erin' }, user.devToken('erin'));
    await assert.rejects(
      user.updateAppSettings({ webhook_url: 'http://127.0.0.1:1/evil' }),
      (error) => error.code === 17,
    );
    await user.disconnectUser();
    await assert.rejects(admin.updateAppSettings({ webhook_url: 'not a url' }), (error) => error.code === 4);

    await admin.updateAppSettings({ webhook_url: '' });
    const back = Date.now();
    await admin.partialUpdateUser({ id: 'erin', set: { status: 'back to the flag' } });
    await waitFor('the flag receiver', () => receiver.delivered('erin', back).length === 1, 5_000);
  } finally {
    await other.close();
  }
});
