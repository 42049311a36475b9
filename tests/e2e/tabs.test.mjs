// End-to-end: tabs of one browser share one connection (src/web/share.js), in headless Chromium, several pages of
// one browser context against the real server. The server's own count of open connections (its operator endpoint)
// says how many sockets there are; peers on the official SDK watch for offline/online flaps.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import {
  API_KEY, API_SECRET, launchBrowser, openConnections, startServer, tempDir, sleep, waitConnections,
} from './harness.mjs';
import {
  buildSite, clientEvents, connectClient, openClientPage, startPeer, userToken, waitClientEvent,
} from './client-harness.mjs';

const GRACE_MS = 3_000;

let tmp;
let server;
let browser;
let admin;
let mia;
const peers = [];

before(async () => {
  tmp = tempDir();
  server = await startServer({
    db: join(tmp.dir, 'tabs.db'),
    graceMs: GRACE_MS,
    admin: true,
    staticDir: buildSite(join(tmp.dir, 'site')),
  });
  admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
  const ids = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivy', 'jack', 'kate', 'liam', 'mia',
    'noah', 'olga'];
  await admin.upsertUsers(ids.map((id) => ({ id, name: id })));
  browser = await launchBrowser({ backForwardCache: true });
});

after(async () => {
  for (const peer of peers) await peer.stop();
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

async function peer(userId, watched) {
  const started = await startPeer(server.url, userId, watched);
  peers.push(started);
  return started;
}

/** A tab of `context` with a client of `userId` connected to `on` (options as connectClient's). */
async function tab(context, userId, options = {}, on = server) {
  const page = await openClientPage(browser, on.url, context);
  assert.deepEqual(await connectClient(page, { userId, baseURL: on.url, ...options }), { ok: true });
  return page;
}

/** `on`'s count of presence subscriptions (a connection following a user), from its operator endpoint. */
async function follows(on) {
  const text = await (await fetch(`${on.adminURL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('presence_follows '));
  assert.ok(line, 'the server exports presence_follows');
  return Number(line.split(' ')[1]);
}

async function waitFollows(on, count, timeout) {
  const deadline = Date.now() + timeout;
  let seen;
  while ((seen = await follows(on)) !== count) {
    if (Date.now() > deadline) assert.fail(`the server holds ${seen} subscriptions, not ${count}, after ${timeout} ms`);
    await sleep(100);
  }
}

/** The real sockets the page opened (the test page records each): a follower has none open. */
const openSockets = (page) => page.evaluate(() => window.sockets.filter((s) => s.closedAt === null).length);

async function leaderOf(pages) {
  const counts = await Promise.all(pages.map(openSockets));
  assert.equal(counts.reduce((a, b) => a + b, 0), 1, `one socket among the tabs: ${counts}`);
  return pages[counts.indexOf(1)];
}

/** Waits until one of `pages` has a socket opened since `since`; resolves with when it opened. */
async function waitNewSocket(pages, since, timeout = 5_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    for (const page of pages) {
      const opened = await page.evaluate(
        (since) => window.sockets.find((s) => s.createdAt >= since && s.openedAt !== null)?.openedAt ?? null,
        since,
      );
      if (opened !== null) return opened;
    }
    if (Date.now() > deadline) assert.fail(`no tab opened a socket within ${timeout} ms`);
    await sleep(20);
  }
}

test('three tabs of one user hold one connection, every tab gets every event, and a closed leader hands over', async () => {
  const bob = await peer('bob', ['alice']);
  const base = await openConnections(server);
  const context = await browser.newContext();
  // Each tab follows a user of its own: the one socket carries the three subscriptions.
  const tabs = [];
  for (const watched of [['carol'], ['dave'], ['erin']]) tabs.push(await tab(context, 'alice', { watched }));
  await waitConnections(server, base + 1);
  await bob.waitFor('alice', true, 10_000);
  const ids = await Promise.all(tabs.map((page) => page.evaluate(() => window.client.connectionId)));
  assert.equal(new Set(ids).size, 1, `one connection id in every tab: ${ids}`);
  assert.ok(ids[0], 'a connection id');

  // carol, dave and erin come online: every tab sees all three, each once.
  const cameAt = Date.now();
  for (const id of ['carol', 'dave', 'erin']) await peer(id, []);
  for (const page of tabs) {
    for (const id of ['carol', 'dave', 'erin']) {
      await waitClientEvent(page, { type: 'user.presence.changed', user: id, online: true }, 10_000, cameAt);
    }
  }
  // A status change made in one tab reaches the others (and bob).
  await tabs[2].evaluate(() => window.client.partialUpdateUser({ id: 'alice', set: { status: 'in a meeting' } }));
  for (const page of tabs) {
    await page.waitForFunction(() => window.client.user?.status === 'in a meeting', null, { timeout: 5_000 });
  }
  const counts = await Promise.all(tabs.map(async (page) => (await clientEvents(page, 'user.presence.changed', cameAt))
    .filter((e) => e.user === 'carol' && e.online === true).length));
  assert.deepEqual(counts, [1, 1, 1], 'each tab got carol coming online once');

  // The leader closes: another tab opens the socket within 1 s, bob sees no flap, the union survives.
  const leader = await leaderOf(tabs);
  const rest = tabs.filter((page) => page !== leader);
  const closedAt = Date.now();
  await leader.close();
  const openedAt = await waitNewSocket(rest, closedAt);
  console.log(`the leader closed: a follower connected ${openedAt - closedAt} ms later`);
  assert.ok(openedAt - closedAt < 1_000, `handover took ${openedAt - closedAt} ms`);
  await waitConnections(server, base + 1 + 3);
  await sleep(GRACE_MS + 500);
  assert.deepEqual(bob.about('alice', closedAt), [], 'bob saw alice neither leave nor come back');
  const { users } = await admin.queryUsers({ id: 'alice' });
  assert.equal(users[0].online, true);

  // The remaining tabs re-subscribed on the new connection: both still hear dave and erin leave.
  const newId = await rest[0].evaluate(() => window.client.connectionId);
  assert.notEqual(newId, ids[0], 'a new connection');
  assert.equal(await rest[1].evaluate(() => window.client.connectionId), newId);
  const leftAt = Date.now();
  for (const started of peers.filter((p) => p.client.userID === 'dave' || p.client.userID === 'erin')) {
    await started.client.disconnectUser();
  }
  for (const page of rest) {
    await waitClientEvent(page, { type: 'user.presence.changed', user: 'dave', online: false }, 10_000, leftAt);
    await waitClientEvent(page, { type: 'user.presence.changed', user: 'erin', online: false }, 10_000, leftAt);
  }
  for (const page of rest) assert.deepEqual(page.problems, []);
  await context.close();
});

test('disconnectUser() in one of two tabs keeps the user online; in the last one it ends at once', async () => {
  const gina = await peer('gina', ['frank']);
  const context = await browser.newContext();
  const first = await tab(context, 'frank');
  const second = await tab(context, 'frank');
  await gina.waitFor('frank', true, 10_000);
  const leader = await leaderOf([first, second]);
  const follower = leader === first ? second : first;

  // The leader leaves: the follower takes over, frank stays online.
  const leftAt = Date.now();
  await leader.evaluate(() => window.client.disconnectUser());
  await waitNewSocket([follower], leftAt);
  await sleep(GRACE_MS + 500);
  assert.deepEqual(gina.about('frank', leftAt), [], 'gina saw no flap');
  assert.equal(await openSockets(leader), 0);

  // The leader tab connects again, now as a follower; then the follower (now leading) stays while it leaves.
  assert.deepEqual(await connectClient(leader, { userId: 'frank', baseURL: server.url }), { ok: true });
  assert.equal(await openSockets(leader), 0, 'the tab that came back follows');
  const againAt = Date.now();
  await leader.evaluate(() => window.client.disconnectUser());
  await sleep(GRACE_MS + 500);
  assert.deepEqual(gina.about('frank', againAt), [], 'a follower leaving changes nothing');

  // The last tab leaves: offline at once (a deliberate close), not after the grace.
  const lastAt = Date.now();
  await follower.evaluate(() => window.client.disconnectUser());
  const offlineAt = await gina.waitFor('frank', false, 10_000, lastAt);
  assert.ok(offlineAt - lastAt < GRACE_MS, `offline ${offlineAt - lastAt} ms after the last tab left`);
  for (const page of [first, second]) assert.deepEqual(page.problems, []);
  await context.close();
});

test('tabs of two users share nothing; shareConnection: false keeps a socket per tab', async () => {
  const base = await openConnections(server);
  const context = await browser.newContext();
  const hank = await tab(context, 'hank');
  const ivy = await tab(context, 'ivy');
  await waitConnections(server, base + 2);
  assert.deepEqual([await openSockets(hank), await openSockets(ivy)], [1, 1]);

  const own = [await tab(context, 'jack', { shareConnection: false }), await tab(context, 'jack', { shareConnection: false })];
  await waitConnections(server, base + 4);
  assert.deepEqual(await Promise.all(own.map(openSockets)), [1, 1]);
  const ids = await Promise.all(own.map((page) => page.evaluate(() => window.client.connectionId)));
  assert.notEqual(ids[0], ids[1]);
  await context.close();
  await waitConnections(server, base);
});

test('a leader told it is about to freeze hands over; on resume it rejoins as a follower', async () => {
  const kate = await peer('kate', ['erin']);
  const context = await browser.newContext();
  const first = await tab(context, 'erin', { watched: ['kate'] });
  const second = await tab(context, 'erin', { watched: ['kate'] });
  await kate.waitFor('erin', true, 10_000);
  const leader = await leaderOf([first, second]);
  const follower = leader === first ? second : first;

  const frozeAt = Date.now();
  await leader.evaluate(() => document.dispatchEvent(new Event('freeze')));
  const openedAt = await waitNewSocket([follower], frozeAt);
  console.log(`a leader froze: the follower connected ${openedAt - frozeAt} ms later`);
  assert.ok(openedAt - frozeAt < 1_000, `handover took ${openedAt - frozeAt} ms`);

  const resumedAt = Date.now();
  await leader.evaluate(() => document.dispatchEvent(new Event('resume')));
  await waitClientEvent(leader, { type: 'connection.recovered' }, 5_000, resumedAt);
  assert.equal(await openSockets(leader), 0, 'the resumed tab follows');
  await sleep(GRACE_MS + 500);
  assert.deepEqual(kate.about('erin', frozeAt), [], 'kate saw no flap');
  // Both tabs hear kate's status change.
  const changedAt = Date.now();
  await kate.client.partialUpdateUser({ id: 'kate', set: { status: 'back' } });
  for (const page of [first, second]) {
    await waitClientEvent(page, { type: 'user.updated', user: 'kate' }, 5_000, changedAt);
  }
  for (const page of [first, second]) assert.deepEqual(page.problems, []);
  await context.close();
});

test('a leader leaving into the back/forward cache hands over, and rejoins as a follower when shown again', async () => {
  mia = await peer('mia', ['liam']);
  const context = await browser.newContext();
  const first = await tab(context, 'liam', { watched: ['mia'] });
  const second = await tab(context, 'liam', { watched: ['mia'] });
  await mia.waitFor('liam', true, 10_000);
  const leader = await leaderOf([first, second]);
  const follower = leader === first ? second : first;

  const leftAt = Date.now();
  await leader.click('#away');
  await leader.waitForURL(/away\.html$/, { timeout: 10_000 });
  const openedAt = await waitNewSocket([follower], leftAt);
  assert.ok(openedAt - leftAt < 1_000, `handover took ${openedAt - leftAt} ms`);
  await leader.goBack({ waitUntil: 'commit', timeout: 10_000 });
  const shown = await leader.waitForFunction(() => window.pageshows.find((s) => s.persisted), null, { timeout: 10_000 });
  const shownAt = (await shown.jsonValue()).t;
  await waitClientEvent(leader, { type: 'connection.recovered' }, 5_000, shownAt);
  assert.equal(await openSockets(leader), 0, 'restored from the cache, the tab follows');
  assert.equal(await openSockets(follower), 1);
  const changedAt = Date.now();
  await mia.client.partialUpdateUser({ id: 'mia', set: { status: 'here' } });
  await waitClientEvent(leader, { type: 'user.updated', user: 'mia' }, 5_000, changedAt);
  await sleep(Math.max(0, leftAt + GRACE_MS + 500 - Date.now()));
  assert.deepEqual(mia.about('liam', leftAt), [], 'mia saw no flap');
  for (const page of [first, second]) assert.deepEqual(page.problems, []);
  await context.close();
});

test('a tab whose connectUser was refused does not hold the socket from the others', async () => {
  const context = await browser.newContext();
  const refused = await openClientPage(browser, server.url, context);
  // An expired token, and no provider to renew it: the server refuses the handshake for good.
  const outcome = await refused.evaluate(async ({ baseURL, apiKey, token }) => {
    const client = new window.Client(apiKey, { baseURL });
    try {
      await client.connectUser({ id: 'noah' }, token);
      return { ok: true };
    } catch (error) {
      return { ok: false, code: error.code };
    }
  }, { baseURL: server.url, apiKey: API_KEY, token: userToken('noah', -60) });
  assert.deepEqual(outcome, { ok: false, code: 40 }, 'the expired token is refused');
  assert.equal((await refused.evaluate(() => window.sockets)).length, 1, 'the refused tab tried its own socket');
  const startedAt = Date.now();
  const good = await tab(context, 'noah');
  assert.equal(await openSockets(good), 1, 'the next tab connects on a socket of its own');
  console.log(`after a refused tab, the next connected in ${Date.now() - startedAt} ms`);
  assert.deepEqual(good.problems, []);
  await context.close();
});

test('a leader frozen without warning loses the socket to a follower, and follows when it runs again', async () => {
  const context = await browser.newContext();
  const first = await tab(context, 'olga', { watched: ['mia'] });
  const second = await tab(context, 'olga', { watched: ['mia'] });
  const leader = await leaderOf([first, second]);
  const follower = leader === first ? second : first;
  // Frozen as a page the browser froze without its `freeze` event: its JavaScript stops (the debugger), while the
  // browser still answers the server's pings on its socket.
  const cdp = await context.newCDPSession(leader);
  await cdp.send('Debugger.enable');
  const paused = new Promise((done) => cdp.once('Debugger.paused', done));
  const stopped = cdp.send('Runtime.evaluate', { expression: 'debugger' });
  await paused;
  const frozeAt = Date.now();
  // The follower's pings go unanswered; past its dead-socket deadline (35 s at most) it takes the lock over.
  const openedAt = await waitNewSocket([follower], frozeAt, 45_000);
  console.log(`a leader frozen without warning: the follower took over ${openedAt - frozeAt} ms later`);
  // Its subscriptions made again on the new connection (mia's status is no presence change a recovery reports).
  await waitClientEvent(follower, { type: 'connection.recovered' }, 10_000, frozeAt);
  const changedAt = Date.now();
  await mia.client.partialUpdateUser({ id: 'mia', set: { status: `at ${changedAt}` } });
  await waitClientEvent(follower, { type: 'user.updated', user: 'mia' }, 5_000, changedAt);

  const resumedAt = Date.now();
  await cdp.send('Debugger.resume');
  await stopped;
  await waitClientEvent(leader, { type: 'connection.recovered' }, 5_000, resumedAt);
  assert.equal(await openSockets(leader), 0, 'the tab that ran again follows');
  assert.equal(await openSockets(follower), 1);
  for (const page of [first, second]) assert.deepEqual(page.problems, []);
  await context.close();
});

test('a tab that goes takes its subscriptions with it, whether it closes or crashes', async () => {
  // A server of its own: its count of subscriptions is this test's alone.
  const own = await startServer({
    db: join(tmp.dir, 'tabs-follows.db'), graceMs: GRACE_MS, admin: true, staticDir: buildSite(join(tmp.dir, 'site2')),
  });
  const context = await browser.newContext();
  try {
    await subscriptionsGo(own, context);
  } finally {
    await context.close();
    await own.stop();
  }
});

async function subscriptionsGo(own, context) {
  const ownAdmin = new StreamChat(API_KEY, API_SECRET, { baseURL: own.url, timeout: 5000 });
  ownAdmin.logger = () => {};
  await ownAdmin.upsertUsers(['pia', 'quin', 'rosa', 'sam'].map((id) => ({ id })));
  const stays = await tab(context, 'pia', { watched: ['quin'] }, own);
  const closes = await tab(context, 'pia', { watched: ['rosa'] }, own);
  const crashes = await tab(context, 'pia', { watched: ['sam'] }, own);
  assert.equal(await leaderOf([stays, closes, crashes]), stays);
  await waitFollows(own, 3, 5_000);

  // A follower closes: the leader renews the connection, the tabs left re-subscribe theirs, rosa is forgotten.
  await closes.close();
  await waitFollows(own, 2, 10_000);
  // One crashes (it says nothing): the leader finds its lock gone at its next check, within 10 s.
  const cdp = await context.newCDPSession(crashes);
  cdp.send('Page.crash').then(() => {}, () => {});
  await waitFollows(own, 1, 25_000);

  // What the staying tab hears: quin's change (the control), nothing of rosa's or sam's.
  await stays.waitForFunction(() => window.client.connectionId, null, { timeout: 5_000 });
  const changedAt = Date.now();
  for (const id of ['rosa', 'sam', 'quin']) await ownAdmin.partialUpdateUser({ id, set: { status: `${id} moved` } });
  await waitClientEvent(stays, { type: 'user.updated', user: 'quin' }, 10_000, changedAt);
  const heard = (await clientEvents(stays, 'user.updated', changedAt)).map((e) => e.user);
  assert.deepEqual(heard, ['quin'], 'only the staying tab\'s subscription is left');
  assert.deepEqual(stays.problems, []);
}
