// Shared pieces of the end-to-end tests: the real server as a child process, headless Chromium through
// playwright-core, and small readers of what the demo page shows.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const API_KEY = 'demo-key';
export const API_SECRET = 'e2e-secret-0123456789';
export const ARTIFACTS = join(ROOT, 'artifacts', 'e2e');

const SERVER_BIN = process.env.PRESENCE_SERVER_BIN || join(ROOT, 'target', 'release', 'presence-server');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Every child process started here, killed hard if the test process leaves without stopping them. */
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/** A temporary folder for the database, removed by `cleanup()`. */
export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'presence-e2e-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts presence-server serving `staticDir` (www/ by default) and resolves once it prints `listening on URL`.
 * Returns { url, port, adminURL, stop(), kill() } where stop() sends SIGTERM and waits for the exit (SIGKILL after 5
 * s), kill() sends SIGKILL;
 * `admin: true` opens the operator endpoints (/metrics) on a port of their own, at `adminURL`.
 */
export async function startServer({
  port = 0, db, graceMs = 1500, staticDir = join(ROOT, 'www'), extraArgs = [], admin = false,
}) {
  if (!existsSync(SERVER_BIN)) throw new Error(`no server binary at ${SERVER_BIN}: run scripts/test-e2e.sh`);
  const args = [
    '--addr', `127.0.0.1:${port}`,
    '--db', db,
    '--api-key', API_KEY,
    '--api-secret', API_SECRET,
    '--dev-tokens',
    '--static-dir', staticDir,
    '--offline-grace-ms', String(graceMs),
    '--admin-addr', admin ? '127.0.0.1:0' : 'off',
    ...extraArgs,
  ];
  const child = spawn(SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk).slice(-8000);
  };
  child.stderr.on('data', keep);
  const exited = new Promise((done) => child.once('exit', (code, signal) => {
    children.delete(child);
    done({ code, signal });
  }));

  const url = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start within 15 s:\n${output}`)), 15_000);
    child.stdout.on('data', (chunk) => {
      keep(chunk);
      const match = /^listening on (http:\/\/\S+)/m.exec(output);
      if (match && (!admin || /admin listening on /.test(output))) {
        clearTimeout(timer);
        done(match[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      fail(new Error(`server exited (${code ?? signal}) before listening:\n${output}`));
    });
  });

  return {
    url,
    port: Number(new URL(url).port),
    adminURL: admin ? /admin listening on (http:\/\/\S+)/.exec(output)[1] : undefined,
    output: () => output,
    /** kill -9: the process ends at once, as in a crash. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      return exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** Headless Chromium; `backForwardCache`: with the back/forward cache on (playwright-core turns it off). */
export async function launchBrowser({ backForwardCache = false } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    ignoreDefaultArgs: backForwardCache ? ['--disable-back-forward-cache'] : [],
    timeout: 30_000,
  });
}

/** Network noise Chromium logs by itself while the server is down; everything else counts as a page error. */
const EXPECTED_WHILE_DOWN = [/WebSocket connection to .* failed/, /net::ERR_CONNECTION_REFUSED/, /Failed to fetch/];

/**
 * Opens the demo page in a fresh browser context (its own storage, like another person's browser).
 * `page.problems` collects console errors and uncaught exceptions; `page.serverDown` marks the time the server
 * is away, whose connection errors are expected.
 */
export async function openPage(browser, url, { viewport = { width: 1280, height: 860 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.serverDown = false;
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (page.serverDown && EXPECTED_WHILE_DOWN.some((re) => re.test(text))) return;
    page.problems.push(`console.error: ${text}`);
  });
  page.on('pageerror', (error) => page.problems.push(`uncaught: ${error.message}`));
  await page.goto(url, { timeout: 15_000 });
  return page;
}

export async function closePage(page) {
  if (!page.isClosed()) await page.context().close();
}

export function resetArtifacts() {
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, timeout: 10_000 });
}

// ----- what the page shows -----

export const row = (id) => `[data-testid="roster"] [data-testid="user-row"][data-user="${id}"]`;

/** Waits (bounded) until the connection badge shows `state`. */
export async function waitConnection(page, state, timeout = 15_000) {
  await page.waitForSelector(`[data-testid="connection-badge"][data-connection="${state}"]`, { timeout });
}

/** Waits (bounded) until `id`'s roster row shows online (true) or offline (false). */
export async function waitOnline(page, id, online, timeout = 10_000) {
  await page.waitForSelector(`${row(id)}[data-online="${online}"]`, { timeout });
}

/** What a person reads in `id`'s roster row. */
export async function readRow(page, id) {
  return page.$eval(row(id), (node) => ({
    online: node.dataset.online,
    presence: node.querySelector('[data-testid="user-presence"]').textContent,
    status: node.querySelector('[data-testid="user-status"]').hidden
      ? ''
      : node.querySelector('[data-testid="user-status"]').textContent,
    lastActive: node.querySelector('[data-testid="user-last-active"]').textContent,
  }));
}

/**
 * How `id`'s row looks, ignoring the words that legitimately differ between users (name, status, time): the row's
 * attributes other than the user's own, the presence label, and the computed colours of the dot and the name.
 */
export async function rowLook(page, id) {
  return page.$eval(row(id), (node) => {
    // Settle running transitions so colours are the final ones.
    for (const animation of node.getAnimations({ subtree: true })) animation.finish();
    const attrs = {};
    for (const { name, value } of node.attributes) {
      if (!['data-user', 'data-status', 'style'].includes(name)) attrs[name] = value;
    }
    const color = (sel) => getComputedStyle(node.querySelector(sel)).color;
    return {
      attrs,
      presence: node.querySelector('[data-testid="user-presence"]').textContent,
      dot: getComputedStyle(node.querySelector('.dot')).backgroundColor,
      name: color('.name'),
      presenceColor: color('[data-testid="user-presence"]'),
      mentionsInvisible: /invisible/i.test(node.outerHTML),
    };
  });
}

/**
 * Starts recording, inside the page, every change of `id`'s row as seen in the DOM: each entry is
 * { t: Date.now(), online: 'true' | 'false' | 'missing' }. Read it back with `readWatch`.
 */
export async function watchRow(page, id, key = 'default') {
  await page.evaluate(({ id, key }) => {
    const selector = `[data-testid="roster"] [data-testid="user-row"][data-user="${id}"]`;
    const read = () => {
      const node = document.querySelector(selector);
      return node ? node.dataset.online : 'missing';
    };
    const log = [{ t: Date.now(), online: read() }];
    const observer = new MutationObserver(() => {
      const now = read();
      if (now !== log[log.length - 1].online) log.push({ t: Date.now(), online: now });
    });
    observer.observe(document.querySelector('[data-testid="roster"]'), {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ['data-online'],
    });
    window.__rowWatches = window.__rowWatches || {};
    window.__rowWatches[key] = { log, observer };
  }, { id, key });
}

export async function readWatch(page, key = 'default', { stop = true } = {}) {
  return page.evaluate(({ key, stop }) => {
    const watch = window.__rowWatches[key];
    if (stop) watch.observer.disconnect();
    return watch.log;
  }, { key, stop });
}

/** Events of `type` (about `user`, when given) in the page's event log. */
export async function countEvents(page, type, user) {
  const selector = `[data-testid="event-log"] li[data-type="${type}"]${user ? `[data-user="${user}"]` : ''}`;
  return page.$$eval(selector, (nodes) => nodes.length);
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** The server's count of open WebSocket connections (its operator endpoint: `startServer({ admin: true })`). */
export async function openConnections(server) {
  const text = await (await fetch(`${server.adminURL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('presence_open_connections '));
  if (!line) throw new Error(`no presence_open_connections in\n${text}`);
  return Number(line.split(' ')[1]);
}

/** Waits (bounded) until the server holds `count` open connections. */
export async function waitConnections(server, count, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let seen;
  while ((seen = await openConnections(server)) !== count) {
    if (Date.now() > deadline) throw new Error(`the server has ${seen} open connections, not ${count}`);
    await sleep(50);
  }
}
