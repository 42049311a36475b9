// End-to-end: the README's client quick start runs as written. The first `js` block of README.md's "The client"
// section is taken verbatim, against a server set up as `scripts/start.sh` sets it up (dev tokens, the API key
// demo-key, the seeded users and channel), in headless Chromium. Only the import specifier (the page has no bundler)
// and the address the example names (the test's server listens on a free port) are replaced.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { seed } from '../../scripts/seed.mjs';
import { ROOT, API_KEY, API_SECRET, closePage, launchBrowser, openPage, startServer, tempDir } from './harness.mjs';

/** The first ```js block after the `## The client` heading of README.md. */
function readmeExample() {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## The client\n'));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(match, 'README.md has a js example under "The client"');
  return match[1];
}

let tmp;
let server;
let browser;
before(async () => {
  tmp = tempDir();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

test("the README's client example runs as written against the demo server", async () => {
  const example = readmeExample();
  assert.match(example, /from 'presence-client'/);
  assert.match(example, /'http:\/\/127\.0\.0\.1:7070'/);
  assert.equal(API_KEY, 'demo-key', 'the test server uses the key start.sh uses');

  const site = join(tmp.dir, 'site');
  mkdirSync(site);
  cpSync(join(ROOT, 'pkg'), join(site, 'pkg'), { recursive: true });
  const runnable = example
    .replace("from 'presence-client'", "from './pkg/presence_client.js'")
    .replace("'http://127.0.0.1:7070'", 'location.origin');
  // What the example leaves in scope, for the test to read once it has run to its end.
  writeFileSync(join(site, 'example.js'), `${runnable}\nwindow.example = { users, state };\n`);
  writeFileSync(join(site, 'index.html'), `<!doctype html><title>README</title><link rel="icon" href="data:,">
<script type="module">
  window.addEventListener('unhandledrejection', (e) => { window.failure = String(e.reason && e.reason.stack || e.reason); });
  import('./example.js').catch((e) => { window.failure = String(e && e.stack || e); });
</script>`);

  server = await startServer({ db: join(tmp.dir, 'readme.db'), staticDir: site });
  await seed({ baseURL: server.url, apiKey: API_KEY, apiSecret: API_SECRET, activity: true });
  browser = await launchBrowser();
  const page = await openPage(browser, `${server.url}/index.html`);
  await page.waitForFunction(() => window.example || window.failure, null, { timeout: 30_000 });
  const { failure, example: result } = await page.evaluate(() => ({
    failure: window.failure,
    example: window.example && {
      users: window.example.users.map((u) => u.id),
      channel: window.example.state.channel.cid,
      members: window.example.state.members.map((m) => m.user_id).sort(),
    },
  }));
  assert.equal(failure, undefined, failure);
  assert.deepEqual(result.users.sort(), ['bob', 'carol']);
  assert.equal(result.channel, 'messaging:demo');
  assert.ok(result.members.includes('alice'), `alice is a member of messaging:demo: ${result.members}`);
  assert.deepEqual(page.problems, []);
  await closePage(page);
});
