// End-to-end: the demo page in headless Chromium, two (and for a moment three) people, against the real server.
// Every assertion reads what a person would see on the page. Screenshots go to artifacts/e2e/.
import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { seed } from '../../scripts/seed.mjs';
import {
  API_KEY, API_SECRET, closePage, countEvents, launchBrowser, openPage, readRow, readWatch, resetArtifacts,
  row, rowLook, screenshot, sleep, startServer, tempDir, waitConnection, waitOnline, watchRow,
} from './harness.mjs';

const GRACE_MS = 2000;
const STEP = { timeout: 45_000 };

describe('demo page, two people, real server', { timeout: 170_000 }, () => {
  let tmp;
  let db;
  let server;
  let browser;
  let bob;
  let alice;
  let carol;
  /** Page URL for a user. */
  const url = (user) => `${server.url}/?user=${user}`;
  const pages = () => [bob, alice, carol].filter((p) => p && !p.isClosed());
  /** Problems of pages that are gone, kept for the final check. */
  const closedProblems = [];

  async function retire(page) {
    if (!page) return;
    closedProblems.push(...page.problems);
    await closePage(page);
  }

  before(async () => {
    resetArtifacts();
    tmp = tempDir();
    db = join(tmp.dir, 'presence.db');
    server = await startServer({ db, graceMs: GRACE_MS });
    await seed({ baseURL: server.url, apiKey: API_KEY, apiSecret: API_SECRET });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop();
    tmp?.cleanup();
  });

  test('bob signs in and sees alice offline, then online when she opens the page', STEP, async () => {
    bob = await openPage(browser, url('bob'));
    await waitConnection(bob, 'connected');
    await waitOnline(bob, 'alice', false);
    assert.equal(await bob.textContent('[data-testid="me-connection"]'), 'connected');
    assert.equal(await bob.getAttribute('[data-testid="me"]', 'data-online'), 'true');
    // Channel members and the query's other users are both listed.
    assert.equal(await bob.locator('[data-testid="channel-members"] [data-user="alice"]').count(), 1);
    assert.equal(await bob.locator('[data-testid="query-users"] [data-user="erin"]').count(), 1);
    assert.equal(await bob.locator('[data-user="bob"][data-testid="user-row"]').count(), 0, 'bob is not in his own roster');
    const before = await readRow(bob, 'alice');
    assert.equal(before.presence, 'Offline');
    assert.equal(before.status, 'Eating a veggie burger...');
    await screenshot(bob, '01-bob-alone');

    alice = await openPage(browser, url('alice'));
    await waitConnection(alice, 'connected');
    await waitOnline(bob, 'alice', true);
    const now = await readRow(bob, 'alice');
    assert.equal(now.presence, 'Online');
    assert.match(now.lastActive, /^last active (just now|\d+ seconds? ago)$/);
    assert.ok((await countEvents(bob, 'user.presence.changed', 'alice')) >= 1);
    await waitOnline(alice, 'bob', true);
    await screenshot(bob, '02-bob-sees-alice-online');
    await screenshot(alice, '02-alice-signed-in');
  });

  test('"last active" keeps itself current without reloading', STEP, async () => {
    // erin was created by the seed and never connected; any user's time must tick on its own.
    const first = await bob.textContent(`${row('alice')} [data-testid="user-last-active"]`);
    await bob.waitForFunction(
      ({ selector, first }) => {
        const text = document.querySelector(selector).textContent;
        return text !== first && /seconds? ago/.test(text);
      },
      { selector: `${row('alice')} [data-testid="user-last-active"]`, first },
      { timeout: 12_000, polling: 250 },
    );
  });

  test('bob sees alice change her status', STEP, async () => {
    const updates = await countEvents(bob, 'user.updated', 'alice');
    await alice.fill('[data-testid="status-input"]', 'Out for lunch');
    await alice.click('[data-testid="status-save"]');
    await bob.waitForSelector(`${row('alice')}[data-status="Out for lunch"]`, { timeout: 10_000 });
    assert.equal((await readRow(bob, 'alice')).status, 'Out for lunch');
    assert.equal((await readRow(bob, 'alice')).online, 'true');
    assert.ok((await countEvents(bob, 'user.updated', 'alice')) > updates, 'bob logged user.updated');
    await screenshot(bob, '03-bob-sees-alice-status');
  });

  let offlineLook;
  test('alice goes invisible: bob sees her exactly like someone who is not connected', STEP, async () => {
    await alice.click('label.switch:has([data-testid="invisible-toggle"])');
    await alice.waitForSelector('[data-testid="me"][data-invisible="true"]', { timeout: 10_000 });
    // Her own card still says she is online (to herself), and invisible.
    assert.equal(await alice.getAttribute('[data-testid="me"]', 'data-online'), 'true');
    assert.match(await alice.textContent('[data-testid="me-online"]'), /invisible/);
    await waitOnline(bob, 'alice', false);
    const aliceLook = await rowLook(bob, 'alice');
    const daveLook = await rowLook(bob, 'dave'); // dave never connected
    assert.deepEqual(aliceLook, daveLook);
    assert.equal(aliceLook.mentionsInvisible, false);
    assert.equal(aliceLook.presence, 'Offline');
    offlineLook = aliceLook;
    await screenshot(bob, '04-bob-sees-invisible-alice-offline');
    await screenshot(alice, '04-alice-invisible');
  });

  test('alice becomes visible again: bob sees her online', STEP, async () => {
    await alice.click('label.switch:has([data-testid="invisible-toggle"])');
    await alice.waitForSelector('[data-testid="me"][data-invisible="false"]', { timeout: 10_000 });
    await waitOnline(bob, 'alice', true);
    assert.equal((await readRow(bob, 'alice')).status, 'Out for lunch');
  });

  test('alice shows her presence to nobody: bob sees her offline, still with her status', STEP, async () => {
    await alice.selectOption('[data-testid="presence-visible-to"]', 'nobody');
    await alice.waitForSelector('[data-testid="me"][data-visible-to="nobody"]', { timeout: 10_000 });
    assert.match(await alice.textContent('[data-testid="me-online"]'), /hidden from everyone/);
    await waitOnline(bob, 'alice', false);
    const look = await rowLook(bob, 'alice');
    assert.equal(look.presence, 'Offline');
    assert.equal((await readRow(bob, 'alice')).status, 'Out for lunch', 'her profile stays visible');
    await alice.selectOption('[data-testid="presence-visible-to"]', 'everyone');
    await alice.waitForSelector('[data-testid="me"][data-visible-to="everyone"]', { timeout: 10_000 });
    await waitOnline(bob, 'alice', true);
  });

  test('a reload of alice\'s page does not flash her offline on bob\'s page', STEP, async () => {
    const flipsBefore = await countEvents(bob, 'user.presence.changed', 'alice');
    await watchRow(bob, 'alice', 'reload');
    await alice.reload({ timeout: 15_000 });
    await waitConnection(alice, 'connected');
    // Keep watching past the grace window: a late offline would show up here.
    await sleep(GRACE_MS + 1500);
    const log = await readWatch(bob, 'reload');
    assert.deepEqual(log.map((e) => e.online), ['true'], `alice's row changed during the reload: ${JSON.stringify(log)}`);
    assert.equal(await countEvents(bob, 'user.presence.changed', 'alice'), flipsBefore, 'no presence event at bob');
    assert.equal(await alice.textContent('[data-testid="me-connection"]'), 'connected');
  });

  test('alice closes her page: bob sees her offline once the grace window has passed', STEP, async () => {
    await watchRow(bob, 'alice', 'close');
    const closedAt = Date.now();
    await retire(alice);
    alice = null;
    await waitOnline(bob, 'alice', false, GRACE_MS + 8000);
    const log = await readWatch(bob, 'close');
    const offline = log.find((e) => e.online === 'false');
    const after = offline.t - closedAt;
    assert.ok(after >= GRACE_MS - 300, `offline after ${after} ms, before the ${GRACE_MS} ms grace window`);
    assert.deepEqual(log.map((e) => e.online), ['true', 'false']);
    assert.deepEqual(await rowLook(bob, 'alice'), offlineLook, 'offline looks the same as invisible');
    await screenshot(bob, '05-bob-sees-alice-gone-after-close');
  });

  test('alice clicks disconnect: bob sees her offline at once', STEP, async () => {
    alice = await openPage(browser, url('alice'));
    await waitConnection(alice, 'connected');
    await waitOnline(bob, 'alice', true);
    await watchRow(bob, 'alice', 'disconnect');
    const clickedAt = Date.now();
    await alice.click('[data-testid="disconnect"]');
    await waitOnline(bob, 'alice', false, GRACE_MS);
    const log = await readWatch(bob, 'disconnect');
    const after = log.find((e) => e.online === 'false').t - clickedAt;
    assert.ok(after < GRACE_MS / 2, `offline only after ${after} ms`);
    // Alice is back at the sign-in form, offline.
    await waitConnection(alice, 'offline');
    assert.equal(await alice.isVisible('[data-testid="sign-in"]'), true);
    assert.equal(await alice.isVisible('[data-testid="me"]'), false);
    assert.equal(await alice.inputValue('[data-testid="sign-in-user"]'), 'alice');
    await screenshot(bob, '06-bob-sees-alice-disconnect');
    await screenshot(alice, '06-alice-signed-out');
  });

  test('alice signs in invisible with a status from the form, then shows herself', STEP, async () => {
    await watchRow(bob, 'alice', 'invisible-connect');
    await alice.fill('[data-testid="sign-in-status"]', 'Heads down');
    await alice.click('label.switch:has([data-testid="sign-in-invisible"])');
    assert.equal(await alice.isChecked('[data-testid="sign-in-invisible"]'), true);
    await alice.click('[data-testid="connect"]');
    await waitConnection(alice, 'connected');
    await alice.waitForSelector('[data-testid="me"][data-invisible="true"][data-online="true"]', { timeout: 10_000 });
    assert.equal(await alice.inputValue('[data-testid="status-input"]'), 'Heads down');
    await sleep(1000);
    const log = await readWatch(bob, 'invisible-connect');
    assert.deepEqual(log.map((e) => e.online), ['false'], 'an invisible sign-in never shows her online');
    await screenshot(alice, '07-alice-connected-invisible');

    await alice.click('label.switch:has([data-testid="invisible-toggle"])');
    await waitOnline(bob, 'alice', true);
    await bob.waitForSelector(`${row('alice')}[data-status="Heads down"]`, { timeout: 10_000 });
  });

  test('server killed and restarted: both pages reconnect on their own and the roster is right', { timeout: 90_000 }, async () => {
    // carol is online before the restart and gone after it.
    carol = await openPage(browser, url('carol'));
    await waitConnection(carol, 'connected');
    await waitOnline(bob, 'carol', true);
    await waitOnline(alice, 'carol', true);

    for (const page of pages()) page.serverDown = true;
    const { port } = server;
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, `server stopped with ${JSON.stringify(stopped)}`);
    await Promise.all([waitConnection(bob, 'reconnecting', 20_000), waitConnection(alice, 'reconnecting', 20_000)]);
    assert.equal(await bob.textContent('[data-testid="me-connection"]'), 'reconnecting…');
    // The badge follows the store, which says reconnecting as soon as the socket is lost; the client's own
    // `connection.changed` (offline) comes once the connection has stayed down for a while.
    await bob.waitForSelector('[data-testid="event-log"] li[data-type="connection.changed"][data-online="false"]',
      { timeout: 20_000 });
    await screenshot(bob, '08-bob-reconnecting');
    await screenshot(alice, '08-alice-reconnecting');
    await retire(carol);
    carol = null;

    server = await startServer({ port, db, graceMs: GRACE_MS });
    await Promise.all([waitConnection(bob, 'connected', 40_000), waitConnection(alice, 'connected', 40_000)]);
    for (const page of pages()) page.serverDown = false;
    // alice made herself visible after signing in invisible: the reconnect must not make her invisible again.
    assert.equal(await alice.getAttribute('[data-testid="me"]', 'data-invisible'), 'false');
    await waitOnline(bob, 'alice', true);
    await waitOnline(alice, 'bob', true);
    await waitOnline(bob, 'carol', false);
    await waitOnline(alice, 'carol', false);
    assert.ok((await countEvents(bob, 'connection.recovered')) >= 1, 'bob logged connection.recovered');
    assert.ok((await countEvents(alice, 'connection.recovered')) >= 1, 'alice logged connection.recovered');

    // Subscriptions are live again: a change after the restart reaches bob.
    await alice.fill('[data-testid="status-input"]', 'Back after the restart');
    await alice.click('[data-testid="status-save"]');
    await bob.waitForSelector(`${row('alice')}[data-status="Back after the restart"]`, { timeout: 10_000 });
    await screenshot(bob, '09-bob-recovered');
    await screenshot(alice, '09-alice-recovered');
  });

  test('fits a phone screen', STEP, async () => {
    await bob.setViewportSize({ width: 390, height: 844 });
    await sleep(200);
    const overflow = await bob.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than a phone screen`);
    await screenshot(bob, '10-bob-phone');
  });

  test('no console errors and no uncaught exceptions on any page', STEP, async () => {
    const problems = [...closedProblems, ...pages().flatMap((p) => p.problems)];
    assert.deepEqual(problems, []);
  });
});
