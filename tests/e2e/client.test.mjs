// End-to-end: the presence-client package in headless Chromium against the real server, through what a user
// notices when the page leaves and returns, the tab is hidden and shown, the token expires, the network goes
// away, and the server refuses or evicts the connection. Peers are the official `stream-chat` SDK in Node.
//
// Each block starts its own server with the timing it needs. The page's WebSocket goes through a TCP relay
// (client-harness.mjs) where a test must cut, refuse or half-freeze it; REST goes to the server directly.
import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, launchBrowser, sleep, startServer, tempDir } from './harness.mjs';
import {
  buildSite, clientEvents, connectClient, openClientPage, sockets, startPeer, startRelay, userToken,
  waitClientEvent,
} from './client-harness.mjs';

let tmp;
let site;
let browser;
before(async () => {
  tmp = tempDir();
  site = buildSite(join(tmp.dir, 'site'));
  browser = await launchBrowser({ backForwardCache: true });
});
after(async () => {
  await browser?.close().catch(() => {});
  tmp?.cleanup();
});

/** A server for one block, serving the test page, with `flags`; users `ids` exist. */
async function serverWith(name, { graceMs, flags = [], ids = [] }) {
  const server = await startServer({
    db: join(tmp.dir, `${name}.db`),
    graceMs,
    staticDir: site,
    extraArgs: flags,
  });
  if (ids.length) {
    const admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
    admin.logger = () => {};
    await admin.upsertUsers(ids.map((id) => ({ id, name: id })));
  }
  return server;
}

/** Every page the tests opened, for the final check of uncaught exceptions. */
const opened = [];
async function openPage(siteURL) {
  const page = await openClientPage(browser, siteURL);
  opened.push(page);
  return page;
}

/** Presence flips of `user` the peer saw from `since` on, as a list of online values. */
const flips = (peer, user, since) => peer.about(user, since).map((e) => e.online);

/** Waits (bounded) until the page has `count` sockets, resolving with the list. */
async function waitSockets(page, count, timeout) {
  await page.waitForFunction((count) => window.sockets.length >= count, count, { timeout, polling: 25 });
  return sockets(page);
}

/** Waits (bounded) until the page's newest socket is open and the client reports a connection id. */
async function waitReconnected(page, timeout) {
  await page.waitForFunction(
    () => window.sockets.length > 0 && window.sockets.at(-1).openedAt !== null
      && window.sockets.at(-1).closedAt === null && typeof window.client.connectionId === 'string'
      && window.client.connectionId !== '',
    null,
    { timeout, polling: 25 },
  );
}

describe('page lifecycle: leave and return, hide and show', { timeout: 90_000 }, () => {
  const GRACE_MS = 10_000;
  let server;
  let relay;
  let peer;
  let carol;
  let page;

  before(async () => {
    server = await serverWith('lifecycle', { graceMs: GRACE_MS, ids: ['alice', 'bob', 'carol'] });
    relay = await startRelay(server.port);
    peer = await startPeer(server.url, 'bob', ['alice']);
    page = await openPage(server.url);
    const result = await connectClient(page, {
      userId: 'alice', baseURL: server.url, wsBaseURL: relay.url, watched: ['bob', 'carol'],
    });
    assert.deepEqual(result, { ok: true });
    await peer.waitFor('alice', true, 5000);
  });
  after(async () => {
    await peer?.stop();
    await carol?.disconnectUser().catch(() => {});
    await page?.context().close().catch(() => {});
    await relay?.close();
    await server?.stop();
  });

  test('back/forward cache: returning reconnects at once, catches up, and the peer never sees alice leave', async () => {
    const before = (await sockets(page)).length;
    const leftAt = Date.now();
    await page.click('#away');
    await page.waitForURL(/away\.html$/, { timeout: 10_000 });
    // While alice is away carol comes online: alice's page must learn it on return.
    carol = new StreamChat(API_KEY, { baseURL: server.url, allowServerSideConnect: true, timeout: 5000 });
    carol.logger = () => {};
    await carol.connectUser({ id: 'carol' }, carol.devToken('carol'));
    await sleep(500);
    await page.goBack({ waitUntil: 'commit', timeout: 10_000 });
    const shows = await page.waitForFunction(() => window.pageshows.find((s) => s.persisted), null, { timeout: 10_000 });
    const shownAt = (await shows.jsonValue()).t;
    assert.ok(shownAt - leftAt < GRACE_MS - 1500, `the round trip took ${shownAt - leftAt} ms, too close to the grace window`);

    // The same client opened a new socket.
    const list = await waitSockets(page, before + 1, 5000);
    await waitReconnected(page, 5000);
    const reconnectIn = list[before].createdAt - shownAt;
    assert.ok(reconnectIn >= 0 && reconnectIn < 500, `reconnect began ${reconnectIn} ms after pageshow`);

    // Re-subscribed and caught up: carol's arrival is reported before connection.recovered.
    await waitClientEvent(page, { type: 'connection.recovered' }, 5000, leftAt);
    const events = await clientEvents(page, null, leftAt);
    const carolOnline = events.findIndex((e) => e.type === 'user.presence.changed' && e.user === 'carol' && e.online === true);
    const recovered = events.findIndex((e) => e.type === 'connection.recovered');
    assert.ok(carolOnline >= 0 && carolOnline < recovered, `events after return: ${JSON.stringify(events)}`);
    // Live again: carol leaving now reaches the page.
    const liveSince = Date.now();
    await carol.disconnectUser();
    carol = null;
    await waitClientEvent(page, { type: 'user.presence.changed', user: 'carol', online: false }, 5000, liveSince);

    // Past the grace window: the peer saw nothing of alice's absence.
    await sleep(Math.max(0, leftAt + GRACE_MS + 1000 - Date.now()));
    assert.deepEqual(flips(peer, 'alice', leftAt), [], 'bob saw alice flip while she went back and forth');
  });

  test('tab hidden and shown: a tab whose connection dropped while hidden reconnects as soon as it is shown', async () => {
    // Headless Chromium keeps every tab visible: the page is told it is hidden and shown the way the browser
    // tells it (visibilityState and the visibilitychange event). Resolves with the page's time of the change.
    const setVisibility = (state) => page.evaluate((state) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
      document.dispatchEvent(new Event('visibilitychange'));
      return Date.now();
    }, state);

    // Shown again with a healthy connection: nothing reconnects.
    await setVisibility('hidden');
    await sleep(300);
    const steady = (await sockets(page)).length;
    await setVisibility('visible');
    await sleep(700);
    assert.equal((await sockets(page)).length, steady, 'showing a connected tab opened a new socket');

    // Hidden, and the server becomes unreachable for a while: the client backs off between attempts.
    const since = Date.now();
    await setVisibility('hidden');
    relay.refuse(true);
    relay.cut();
    // Two refused attempts (after delays drawn from [0.25, 2.5] and [0.25, 5] s, inside the grace window): the next
    // delay is drawn from up to 10 s.
    const deadline = Date.now() + 8_000;
    while (relay.attemptsSince(since) < 2) {
      assert.ok(Date.now() < deadline, `only ${relay.attemptsSince(since)} attempts in 8 s`);
      await sleep(5);
    }
    // The page has seen the second attempt fail (it is between attempts, not in the middle of one).
    await page.waitForFunction(() => window.sockets.at(-1).closedAt !== null, null, { timeout: 5000, polling: 5 });
    relay.refuse(false);
    // With backoff, no attempt comes sooner than 250 ms after the previous failure.
    const backedOff = Date.now() - since;
    assert.ok(backedOff >= 500, `two attempts within ${backedOff} ms of the drop: no backoff`);
    const shownAt = await setVisibility('visible');
    await waitReconnected(page, 5000);
    const reconnectIn = (await sockets(page)).at(-1).createdAt - shownAt;
    assert.ok(reconnectIn < 300, `reconnected ${reconnectIn} ms after the tab was shown`);
    assert.equal(relay.attemptsSince(since), 3, 'attempts: two refused, one when shown');
    await waitClientEvent(page, { type: 'connection.recovered' }, 5000, shownAt);

    // Re-subscribed: carol arriving is reported live.
    const liveSince = Date.now();
    carol = new StreamChat(API_KEY, { baseURL: server.url, allowServerSideConnect: true, timeout: 5000 });
    carol.logger = () => {};
    await carol.connectUser({ id: 'carol' }, carol.devToken('carol'));
    await waitClientEvent(page, { type: 'user.presence.changed', user: 'carol', online: true }, 5000, liveSince);

    // The tab was back inside the grace window: past it, the peer has seen nothing.
    assert.ok(shownAt - since < GRACE_MS - 1000, `the outage lasted ${shownAt - since} ms`);
    await sleep(Math.max(0, since + GRACE_MS + 1000 - Date.now()));
    assert.deepEqual(flips(peer, 'alice', since), [], 'bob saw alice flip while her tab was hidden');
  });
});

describe('token expiry with a token provider', { timeout: 60_000 }, () => {
  const GRACE_MS = 5000;
  const TOKEN_SECS = 3;
  let server;
  let relay;
  let peer;
  let page;

  before(async () => {
    server = await serverWith('token', { graceMs: GRACE_MS, ids: ['alice', 'bob'] });
    relay = await startRelay(server.port);
    peer = await startPeer(server.url, 'bob', ['alice']);
    page = await openPage(server.url);
    // Every token the provider hands out expires TOKEN_SECS after it was minted.
    await page.exposeFunction('mintToken', () => userToken('alice', TOKEN_SECS));
  });
  after(async () => {
    await peer?.stop();
    await page?.context().close().catch(() => {});
    await relay?.close();
    await server?.stop();
  });

  test('an expired token is replaced by the provider, on reconnect and on a REST call, and the session resumes', async () => {
    const result = await connectClient(page, {
      userId: 'alice', baseURL: server.url, wsBaseURL: relay.url, token: 'provider', watched: ['bob'],
    });
    assert.deepEqual(result, { ok: true });
    assert.equal((await page.evaluate(() => window.tokenCalls)).length, 1);
    await peer.waitFor('alice', true, 5000);
    const since = Date.now();

    // The token expires while connected (an open connection stays open), then the connection drops.
    await sleep(TOKEN_SECS * 1000 + 1000);
    assert.equal((await sockets(page)).length, 1, 'the open connection survived its token expiring');
    const cutAt = Date.now();
    relay.cut();
    await waitClientEvent(page, { type: 'connection.recovered' }, 10_000, cutAt);
    await waitReconnected(page, 5000);
    const calls = await page.evaluate(() => window.tokenCalls);
    assert.equal(calls.length, 2, `token provider calls: ${calls.length}`);
    // One attempt with the old token (refused: expired), one with the new.
    const list = await sockets(page);
    assert.equal(list.length, 3, `sockets: ${JSON.stringify(list.map((s) => s.code))}`);
    assert.equal(list[1].error, 40, 'the attempt with the old token was refused as expired');
    assert.ok(calls[1] > cutAt, 'the provider was asked again after the drop');

    // REST after the new token expired too: the provider is asked again and the call succeeds.
    await sleep(Math.max(0, calls[1] + TOKEN_SECS * 1000 + 1000 - Date.now()));
    const query = await page.evaluate(async () => {
      try {
        const { users } = await window.client.queryUsers({ id: { $in: ['bob'] } }, [], {});
        return { ok: true, online: users[0]?.online };
      } catch (error) {
        return { ok: false, code: error.code, message: error.message };
      }
    });
    assert.deepEqual(query, { ok: true, online: true });
    assert.equal((await page.evaluate(() => window.tokenCalls)).length, 3);

    // The session is live (bob leaving is reported) and bob never saw alice go offline.
    const liveSince = Date.now();
    await peer.client.disconnectUser();
    await waitClientEvent(page, { type: 'user.presence.changed', user: 'bob', online: false }, 5000, liveSince);
    assert.deepEqual(flips(peer, 'alice', since), [], 'bob saw alice flip during the token renewal');
    peer = null;
  });
});

describe('network loss longer than the grace window', { timeout: 60_000 }, () => {
  const GRACE_MS = 1500;
  const PONG_MS = 1000;
  let server;
  let bob;
  let carol;
  let page;

  before(async () => {
    server = await serverWith('network', {
      graceMs: GRACE_MS,
      flags: ['--ping-interval-ms', '250', '--pong-timeout-ms', String(PONG_MS)],
      ids: ['alice', 'bob', 'carol'],
    });
    bob = await startPeer(server.url, 'bob', ['alice']);
    carol = await startPeer(server.url, 'carol', []);
    page = await openPage(server.url);
    const result = await connectClient(page, { userId: 'alice', baseURL: server.url, watched: ['bob', 'carol'] });
    assert.deepEqual(result, { ok: true });
    await bob.waitFor('alice', true, 5000);
  });
  after(async () => {
    await bob?.stop();
    await carol?.stop();
    await page?.context().setOffline(false).catch(() => {});
    await page?.context().close().catch(() => {});
    await server?.stop();
  });

  test('the peer sees alice offline after the grace window, alice sees herself offline, both recover', async () => {
    const offAt = Date.now();
    await page.context().setOffline(true);

    // The peer: offline once the server stopped hearing alice (pong timeout) and the grace window passed.
    const seenOffline = await bob.waitFor('alice', false, PONG_MS + GRACE_MS + 6000, offAt);
    const after = seenOffline - offAt;
    assert.ok(after >= GRACE_MS, `bob saw alice offline ${after} ms after the network went, inside the ${GRACE_MS} ms grace`);

    // Alice's own state: the client reports the connection down.
    await waitClientEvent(page, { type: 'connection.changed', online: false }, 8000, offAt);
    assert.equal(await page.evaluate(() => navigator.onLine), false);

    // While alice is away carol leaves; no flood of attempts while the network is gone.
    await carol.stop();
    carol = null;
    await sleep(1000);
    const attempts = (await sockets(page)).filter((s) => s.createdAt > offAt).length;
    const outage = Date.now() - offAt;
    assert.ok(attempts <= 8, `${attempts} connection attempts in ${outage} ms offline`);

    const onAt = Date.now();
    await page.context().setOffline(false);
    await waitClientEvent(page, { type: 'connection.changed', online: true }, 3000, onAt);
    const list = await sockets(page);
    const first = list.find((s) => s.createdAt >= onAt);
    assert.ok(first && first.createdAt - onAt < 500, `first attempt ${first ? first.createdAt - onAt : 'never'} ms after online`);
    await waitClientEvent(page, { type: 'connection.recovered' }, 5000, onAt);
    const events = await clientEvents(page, 'user.presence.changed', onAt);
    assert.ok(events.some((e) => e.user === 'carol' && e.online === false), `after recovery: ${JSON.stringify(events)}`);
    await bob.waitFor('alice', true, 5000, onAt);
    assert.deepEqual(flips(bob, 'alice', offAt), [false, true]);
  });
});

describe('refusals and evictions by the server', { timeout: 150_000 }, () => {
  // alice is evicted twice within 30 s (4002, then 4003): the second reconnect waits up to 5 s (the backoff starts
  // over only after 30 s healthy), inside this window.
  const GRACE_MS = 7000;
  const PONG_MS = 1000;
  const BURST = 30;
  const burstIds = Array.from({ length: BURST }, (_, i) => `u${String(i).padStart(2, '0')}`);
  let server;
  let relay;
  let peer;
  let page;

  before(async () => {
    server = await serverWith('refusals', {
      graceMs: GRACE_MS,
      flags: [
        '--max-connections-per-user', '1', '--ping-interval-ms', '250', '--pong-timeout-ms', String(PONG_MS),
        '--send-queue-bytes', '2048',
      ],
      ids: ['alice', 'bob', 'dave', ...burstIds],
    });
    relay = await startRelay(server.port);
    peer = await startPeer(server.url, 'bob', ['alice']);
    page = await openPage(server.url);
    assert.deepEqual(await connectClient(page, {
      userId: 'alice', baseURL: server.url, wsBaseURL: relay.url, watched: ['bob', ...burstIds],
    }), { ok: true });
    await peer.waitFor('alice', true, 5000);
  });
  after(async () => {
    await peer?.stop();
    await page?.context().close().catch(() => {});
    await relay?.close();
    await server?.stop();
  });

  test('over the per-user connection cap: connectUser rejects with code 71 and nothing retries', async () => {
    const other = await startPeer(server.url, 'dave', []);
    const p = await openPage(server.url);
    try {
      const started = Date.now();
      const result = await connectClient(p, { userId: 'dave', baseURL: server.url, wsBaseURL: relay.url });
      const took = Date.now() - started;
      assert.equal(result.ok, false);
      assert.equal(result.code, 71, `rejection: ${JSON.stringify(result)}`);
      assert.ok(took < 3000, `the rejection took ${took} ms`);
      await sleep(3000);
      assert.equal(relay.attemptsSince(started), 1, 'connection attempts after a refusal');
      const list = await sockets(p);
      assert.equal(list.length, 1);
      assert.equal(list[0].error, 71, 'the server said why');
      assert.equal(await p.evaluate(() => window.client.userID), undefined);
    } finally {
      await other.stop();
      await p.context().close();
    }
  });

  test('closed for a pong timeout (4002): one reconnect after a backoff, and the peer sees no flash', async () => {
    const before = (await sockets(page)).length;
    const since = Date.now();

    // The page's pongs stop reaching the server; the server's frames still reach the page.
    relay.muteOpen();
    await page.waitForFunction((n) => window.sockets[n - 1].closedAt !== null, before, { timeout: PONG_MS + 3000 });
    const first = (await sockets(page))[before - 1];
    assert.equal(first.code, 4002, `close code: ${first.code}`);
    // The last pong before the mute came at most one ping interval earlier.
    assert.ok(first.closedAt - since >= PONG_MS - 300, `closed after ${first.closedAt - since} ms`);
    await waitReconnected(page, 5000);
    await waitClientEvent(page, { type: 'connection.recovered' }, 5000, since);
    await sleep(2000);
    assert.equal(relay.attemptsSince(first.closedAt), 1, 'attempts after the 4002 close');
    await sleep(Math.max(0, since + PONG_MS + GRACE_MS + 500 - Date.now()));
    assert.deepEqual(flips(peer, 'alice', since), [], 'bob saw alice flip');
  });

  test('closed as a slow consumer (4003): one reconnect after a backoff, re-subscribed, no flash at the peer', async () => {
    const admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
    admin.logger = () => {};
    const before = (await sockets(page)).length;
    const since = Date.now();
    // One request updates every user alice follows: more frames at once than her connection may queue.
    await admin.upsertUsers(burstIds.map((id) => ({ id, name: id, status: `burst ${since}` })));
    await page.waitForFunction((n) => window.sockets[n - 1].closedAt !== null, before, { timeout: 5000 });
    const evicted = (await sockets(page))[before - 1];
    assert.equal(evicted.code, 4003, `close code: ${evicted.code}`);
    await waitReconnected(page, 5000);
    await waitClientEvent(page, { type: 'connection.recovered' }, 5000, since);
    await sleep(2000);
    assert.equal(relay.attemptsSince(evicted.closedAt), 1, 'attempts after the 4003 close');
    // Re-subscribed: one update reaches the page live.
    const liveSince = Date.now();
    await admin.partialUpdateUser({ id: 'u00', set: { status: 'after the eviction' } });
    await waitClientEvent(page, { type: 'user.updated', user: 'u00' }, 5000, liveSince);
    await sleep(Math.max(0, since + GRACE_MS + 500 - Date.now()));
    assert.deepEqual(flips(peer, 'alice', since), [], 'bob saw alice flip');
  });

  test('a reconnect refused by the connection cap backs off, then gets in once the slot is free', async () => {
    const since = Date.now();
    // alice's connection drops and another device of hers takes the only slot before the page is back.
    relay.refuse(true);
    relay.cut();
    const device = new StreamChat(API_KEY, { baseURL: server.url, allowServerSideConnect: true, timeout: 5000 });
    device.logger = () => {};
    await device.connectUser({ id: 'alice' }, device.devToken('alice'));
    relay.refuse(false);
    let freedAt;
    try {
      await waitClientEvent(page, { type: 'connection.changed', online: false }, 15_000, since);
      await page.waitForFunction(() => window.sockets.at(-1).error === 71, null, { timeout: 15_000, polling: 25 });
      // Refused attempts keep coming, backed off: delays of at least 250 ms, growing from up to 2.5 s.
      await sleep(3000);
      const attempts = relay.attemptsSince(since);
      assert.ok(attempts <= 8, `${attempts} connection attempts in ${Date.now() - since} ms`);
    } finally {
      await device.disconnectUser().catch(() => {});
      freedAt = Date.now();
    }
    // The slot is free: the page's next attempt (within the 25 s cap of the backoff) gets in and recovers.
    await waitClientEvent(page, { type: 'connection.recovered' }, 30_000, freedAt);
    await waitReconnected(page, 5000);
    assert.ok(relay.attemptsSince(since) >= 2, 'the refused reconnect was tried again');
  });
});

test('no uncaught exceptions and no errors logged by the client on any page', () => {
  assert.ok(opened.length >= 5, `${opened.length} pages opened`);
  assert.deepEqual(opened.flatMap((page) => page.problems), []);
});
