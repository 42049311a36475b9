// End-to-end: a connectUser that cannot succeed says why, in headless Chromium. A server that is down, a base URL
// where something other than a presence server answers, an https URL on a plain-HTTP port, a base URL that is no
// URL, and a token provider that throws each end the connect with the URL tried and the cause the browser lets the
// client tell — ended by the client's diagnosis, not by the 15 s connect budget, whose error reads otherwise
// ("initial WS connection could not be established"); a reachable server still connects.
import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { startServer, tempDir, launchBrowser } from './harness.mjs';
import { buildSite, connectClient, openClientPage } from './client-harness.mjs';

/** A port nothing listens on: bound, read and closed again. */
async function closedPort() {
  const probe = net.createServer();
  await new Promise((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address();
  await new Promise((done) => probe.close(done));
  return port;
}

describe('connect failures say why', { timeout: 120_000 }, () => {
  let tmp;
  let server;
  let other;
  let browser;
  let page;
  before(async () => {
    tmp = tempDir();
    const site = buildSite(join(tmp.dir, 'site'));
    server = await startServer({ db: join(tmp.dir, 'c.db'), staticDir: site });
    // Some other web server: it answers everything with a page, and allows any origin.
    other = createServer((req, res) => {
      res.writeHead(404, { 'Content-Type': 'text/html', 'Access-Control-Allow-Origin': '*' });
      res.end('<h1>Not Found</h1>');
    });
    await new Promise((done) => other.listen(0, '127.0.0.1', done));
    browser = await launchBrowser();
    page = await openClientPage(browser, server.url);
  });
  after(async () => {
    await browser?.close();
    await new Promise((done) => (other ? other.close(done) : done()));
    await server?.stop();
    tmp?.cleanup();
  });

  /** connectUser against `baseURL`: { ok } or { ok: false, code, message }. */
  function attempt(baseURL, options = {}) {
    return connectClient(page, { userId: 'edna', baseURL, ...options });
  }

  test('a server that is down: code 1002 naming the URL and that nothing answers', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const outcome = await attempt(url);
    assert.equal(outcome.ok, false);
    assert.equal(outcome.code, 1002);
    assert.ok(outcome.message.includes(url), outcome.message);
    assert.match(outcome.message, /nothing answers there/);
  });

  test('something other than a presence server: code 1002 naming the HTTP answer', async () => {
    const url = `http://127.0.0.1:${other.address().port}`;
    const outcome = await attempt(url);
    assert.equal(outcome.code, 1002);
    assert.ok(outcome.message.includes(url), outcome.message);
    assert.match(outcome.message, /answers HTTP 404, but not as a presence server/);
  });

  test('https on a plain-HTTP port: code 1002 naming the URL', async () => {
    const url = server.url.replace('http://', 'https://');
    const outcome = await attempt(url);
    assert.equal(outcome.code, 1002);
    assert.ok(outcome.message.includes(url), outcome.message);
    assert.match(outcome.message, /cannot reach a presence server at https:.*nothing answers there/);
  });

  test('a base URL that is no URL is refused by new Client() with code 1000 naming it', async () => {
    const refused = await page.evaluate(() => {
      try {
        new window.Client('demo-key', { baseURL: 'not a url' });
        return null;
      } catch (error) {
        return { code: error.code, message: error.message };
      }
    });
    assert.equal(refused.code, 1000);
    assert.match(refused.message, /baseURL "not a url"/);
  });

  test('a token provider that throws: code 1006 with its message', async () => {
    const outcome = await page.evaluate(async (baseURL) => {
      const client = new window.Client('demo-key', { baseURL });
      try {
        await client.connectUser({ id: 'edna' }, () => { throw new Error('token service down'); });
        return { ok: true };
      } catch (error) {
        return { ok: false, code: error.code, message: error.message };
      }
    }, server.url);
    assert.equal(outcome.code, 1006);
    assert.match(outcome.message, /token service down/);
  });

  test('the server itself: connects', async () => {
    const outcome = await attempt(server.url);
    assert.deepEqual([outcome.ok, outcome.code], [true, undefined]);
    assert.deepEqual(page.problems, []);
  });
});
