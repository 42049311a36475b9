// End-to-end: the demo's first impression. The seed `start.sh` runs leaves a team whose people were just around
// (not "never active"), a phone shows who is here before the own profile, and the brand dot is the page's own
// connection state. Screenshots go to artifacts/e2e/.
import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { seed, DEMO_USERS } from '../../scripts/seed.mjs';
import {
  API_KEY, API_SECRET, closePage, launchBrowser, openPage, readRow, screenshot, startServer, tempDir,
  waitConnection,
} from './harness.mjs';

describe('demo first impression', { timeout: 90_000 }, () => {
  let tmp;
  let server;
  let browser;
  before(async () => {
    tmp = tempDir();
    server = await startServer({ db: join(tmp.dir, 'demo.db') });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    tmp?.cleanup();
  });

  test('the seed leaves recent activity: every demo user but the two who sign in was active a moment ago', async () => {
    const before = Date.now();
    const result = await seed({ baseURL: server.url, apiKey: API_KEY, apiSecret: API_SECRET, activity: true });
    const expected = DEMO_USERS.map((u) => u.id).filter((id) => id !== 'alice' && id !== 'bob');
    assert.deepEqual(result.visited, expected);
    const admin = new StreamChat(API_KEY, API_SECRET, { baseURL: server.url, timeout: 5000 });
    admin.logger = () => {};
    const { users } = await admin.queryUsers({ id: { $in: DEMO_USERS.map((u) => u.id) } }, { id: 1 });
    for (const user of users) {
      if (expected.includes(user.id)) {
        assert.equal(user.online, false, `${user.id} left again`);
        const at = Date.parse(user.last_active);
        assert.ok(at >= before - 1000 && at <= Date.now() + 1000, `${user.id} last active ${user.last_active}`);
      } else {
        assert.equal(user.last_active, undefined, `${user.id} has not been active`);
      }
    }
    // Seeding again (a restart) creates nobody and visits nobody.
    const again = await seed({ baseURL: server.url, apiKey: API_KEY, apiSecret: API_SECRET, activity: true });
    assert.deepEqual([again.created, again.visited], [[], []]);
  });

  test('on a phone the roster comes before the own profile, and the brand dot follows the connection', async () => {
    const page = await openPage(browser, `${server.url}/?user=bob`, { viewport: { width: 390, height: 844 } });
    // Read once the dot's colour transition (0.3 s) has ended.
    const dot = async () => {
      await page.waitForTimeout(600);
      return page.$eval('.brand-dot', (e) => getComputedStyle(e).backgroundColor);
    };
    await waitConnection(page, 'connected');
    const connectedDot = await dot();
    const rosterTop = await page.$eval('[data-testid="roster"]', (e) => e.getBoundingClientRect().top);
    const meTop = await page.$eval('[data-testid="me"]', (e) => e.getBoundingClientRect().top);
    assert.ok(rosterTop < meTop, `roster at ${rosterTop}px, own profile at ${meTop}px`);
    assert.ok(rosterTop < 200, `the roster starts ${rosterTop}px down`);
    const carol = await readRow(page, 'carol');
    assert.match(carol.lastActive, /^last active (just now|\d+ seconds? ago|\d+ minutes? ago)$/);
    await screenshot(page, 'demo-phone-roster-first');

    await page.click('[data-testid="disconnect"]');
    await waitConnection(page, 'offline');
    const offlineDot = await dot();
    assert.notEqual(offlineDot, connectedDot, 'the dot changes when the page goes offline');
    assert.deepEqual(page.problems, []);
    await closePage(page);
  });
});
