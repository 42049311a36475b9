// End-to-end: the server's client silence rule (--client-silence-ms, close 4005) in headless Chromium. A browser
// answers WebSocket pings below JavaScript, so a frozen tab keeps its socket alive; only the client's own
// health.check shows that the page runs. A freeze is made by pausing the page's JavaScript through the debugger
// (CDP Debugger.pause: no timer, no handler runs, the network stack still answers pings), because headless Chromium
// does not freeze a visible page with Page.setWebLifecycleState (measured: its timers kept running). The limit is
// shortened to 45 s (150 s by default), and the throttling of hidden tabs alike: their timers run about once a
// minute, modelled as a tab paused 12 s at a time and let run for a moment. A peer on the official SDK, which keeps
// itself alive with its own health checks, watches. Where the browser says it is about to freeze a page (its
// `freeze` event, dispatched here), the client closes as a page going away does, and peers see it offline after the
// grace only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, launchBrowser, startServer, tempDir, sleep } from './harness.mjs';
import { buildSite, connectClient, openClientPage, sockets, startPeer } from './client-harness.mjs';

const SILENCE_MS = 45_000;
const GRACE_MS = 1_500;
/** The longest a live client goes without a health.check: 25 s after the last reply. */
const PING_MS = 25_000;

let tmp;
let server;
let browser;
let bob;
let erin;
let admin;

before(async () => {
  tmp = tempDir();
  server = await startServer({
    db: join(tmp.dir, 'silence.db'),
    graceMs: GRACE_MS,
    staticDir: buildSite(join(tmp.dir, 'site')),
    extraArgs: ['--client-silence-ms', String(SILENCE_MS)],
  });
  admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
  admin.logger = () => {};
  await admin.upsertUsers(['alice', 'bob', 'carol', 'dave', 'erin'].map((id) => ({ id, name: id })));
  browser = await launchBrowser();
});

after(async () => {
  await bob?.stop();
  await erin?.stop();
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

async function tab(userId) {
  const page = await openClientPage(browser, server.url);
  assert.deepEqual(await connectClient(page, { userId, baseURL: server.url }), { ok: true });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Debugger.enable');
  let stopped = null;
  /** 'frozen': the page's JavaScript stops at a `debugger` statement, at once; 'active': it runs on. */
  const lifecycle = async (state) => {
    if (state === 'frozen') {
      const paused = new Promise((done) => cdp.once('Debugger.paused', done));
      stopped = cdp.send('Runtime.evaluate', { expression: 'debugger' });
      await paused;
    } else {
      await cdp.send('Debugger.resume');
      await stopped;
    }
  };
  return { page, lifecycle };
}

test('a frozen tab reads offline after the silence limit and its grace; a throttled tab stays online', async () => {
  bob = await startPeer(server.url, 'bob', ['alice', 'carol']);
  const alice = await tab('alice');
  const carol = await tab('carol');
  await bob.waitFor('alice', true, 10_000);
  await bob.waitFor('carol', true, 10_000);

  const frozeAt = Date.now();
  await alice.lifecycle('frozen');
  // carol's timers run once in a while, as a hidden tab's do: frozen 12 s, then running for a moment, for longer
  // than the limit.
  let throttling = true;
  const throttled = (async () => {
    while (throttling) {
      await carol.lifecycle('frozen');
      await sleep(12_000);
      await carol.lifecycle('active');
      await sleep(300);
    }
  })();

  const offlineAt = await bob.waitFor('alice', false, SILENCE_MS + GRACE_MS + 15_000, frozeAt);
  const after = offlineAt - frozeAt;
  console.log(`frozen alice read offline ${after} ms after freezing (limit ${SILENCE_MS} ms, grace ${GRACE_MS} ms)`);
  // Her last health.check went out at most PING_MS before the freeze.
  assert.ok(after >= SILENCE_MS - PING_MS - 1_000, `offline ${after} ms after freezing`);

  while (Date.now() - frozeAt < SILENCE_MS + 15_000) await sleep(500);
  throttling = false;
  await throttled;
  assert.deepEqual(bob.about('carol', frozeAt).filter((e) => e.online === false), [],
    'the throttled tab never read offline');

  const resumedAt = Date.now();
  await alice.lifecycle('active');
  await bob.waitFor('alice', true, 5_000, resumedAt);
  const list = await sockets(alice.page);
  const closed = list.find((s) => s.createdAt < frozeAt);
  assert.equal(closed.code, 4005, `the frozen tab's socket: ${JSON.stringify(closed)}`);
  const next = list.find((s) => s.createdAt >= resumedAt);
  assert.ok(next, `a new socket after resuming: ${JSON.stringify(list)}`);
  console.log(`unfrozen alice opened a new socket ${next.createdAt - resumedAt} ms after resuming`);
  assert.ok(next.createdAt - resumedAt < 1_000, `new socket ${next.createdAt - resumedAt} ms after resuming`);

  // The official SDK's own health checks kept bob connected all along.
  const { users } = await admin.queryUsers({ id: { $in: ['bob', 'carol'] } });
  assert.deepEqual(users.map((u) => [u.id, u.online]).sort(), [['bob', true], ['carol', true]]);
  for (const page of [alice.page, carol.page]) assert.deepEqual(page.problems, []);
});

test("a page told it is about to freeze closes at once: offline after the grace, back at once on resume", async () => {
  erin = await startPeer(server.url, 'erin', ['dave']);
  const dave = await tab('dave');
  await erin.waitFor('dave', true, 10_000);
  const frozeAt = Date.now();
  await dave.page.evaluate(() => document.dispatchEvent(new Event('freeze')));
  const offlineAt = await erin.waitFor('dave', false, 10_000, frozeAt);
  console.log(`dave read offline ${offlineAt - frozeAt} ms after his freeze event (grace ${GRACE_MS} ms)`);
  assert.ok(offlineAt - frozeAt >= GRACE_MS - 100, `offline ${offlineAt - frozeAt} ms after the freeze event`);
  const [first] = await sockets(dave.page);
  assert.equal(first.code, 4001, `closed as a page going away: ${JSON.stringify(first)}`);

  const resumedAt = Date.now();
  await dave.page.evaluate(() => document.dispatchEvent(new Event('resume')));
  await erin.waitFor('dave', true, 5_000, resumedAt);
  const next = (await sockets(dave.page)).find((s) => s.createdAt >= resumedAt);
  assert.ok(next && next.createdAt - resumedAt < 1_000, `a new socket after resuming: ${JSON.stringify(next)}`);
  assert.deepEqual(dave.page.problems, []);
});
