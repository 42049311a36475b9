// Pieces of the client end-to-end tests: a site holding the test page and the built package, a TCP relay between
// the page and the server that can cut, refuse or half-freeze connections, signed user tokens, a peer on the
// official `stream-chat` SDK, and readers of what the page's client reported.
import { createHmac } from 'node:crypto';
import { cpSync, mkdirSync, existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { StreamChat } from 'stream-chat';
import { API_KEY, API_SECRET, ROOT } from './harness.mjs';

/** Copies the test page and the built package (pkg/) into `dir`, for the server's `--static-dir`. */
export function buildSite(dir) {
  const pkg = join(ROOT, 'pkg');
  if (!existsSync(join(pkg, 'presence_client.js'))) throw new Error('no pkg/: run scripts/test-e2e.sh');
  mkdirSync(dir, { recursive: true });
  cpSync(join(ROOT, 'tests', 'e2e', 'fixture'), dir, { recursive: true });
  cpSync(pkg, join(dir, 'pkg'), { recursive: true });
  return dir;
}

const base64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An HS256 user token as the server mints it, expiring `expSecs` from now when given. */
export function userToken(userId, expSecs) {
  const claims = { user_id: userId };
  if (expSecs !== undefined) claims.exp = Math.floor(Date.now() / 1000) + expSecs;
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', API_SECRET).update(unsigned).digest('base64url')}`;
}

/**
 * A TCP relay on 127.0.0.1 in front of the server's port, for the page's WebSocket. It records every connection
 * attempt (`attempts`: accept times) and can
 * - `refuse(true)`: close each new connection at once (the server looks unreachable),
 * - `cut()`: end every open connection abruptly, both sides (network loss: the server sees no close frame),
 * - `muteOpen()`: on the connections open now, drop what the page sends from here on (its pongs and frames never
 *   reach the server), while the server's frames still reach the page.
 */
export async function startRelay(targetPort) {
  const attempts = [];
  const open = new Set();
  let refusing = false;
  const relay = net.createServer((page) => {
    attempts.push(Date.now());
    page.on('error', () => {});
    if (refusing) {
      page.destroy();
      return;
    }
    const server = net.connect(targetPort, '127.0.0.1');
    const pair = { page, server, muted: false };
    open.add(pair);
    page.on('data', (chunk) => {
      if (!pair.muted) server.write(chunk);
    });
    page.on('end', () => server.end());
    // Ends the page's side only after the server's last bytes (a close frame) went through.
    server.pipe(page);
    const drop = () => {
      open.delete(pair);
      page.destroy();
      server.destroy();
    };
    page.on('close', drop);
    page.on('error', drop);
    server.on('error', drop);
    server.on('close', () => open.delete(pair));
  });
  await new Promise((done) => relay.listen(0, '127.0.0.1', done));
  const { port } = relay.address();
  return {
    url: `ws://127.0.0.1:${port}`,
    attempts,
    /** Connection attempts since `since` (a Date.now() value). */
    attemptsSince: (since) => attempts.filter((t) => t >= since).length,
    openCount: () => open.size,
    refuse(on) {
      refusing = on;
    },
    muteOpen() {
      for (const pair of open) pair.muted = true;
    },
    cut() {
      for (const { page, server } of open) {
        page.resetAndDestroy?.() ?? page.destroy();
        server.resetAndDestroy?.() ?? server.destroy();
      }
      open.clear();
    },
    close() {
      const closed = new Promise((done) => relay.close(done));
      refusing = true;
      this.cut();
      return closed;
    },
  };
}

/**
 * A peer on the official SDK that follows `watched` users' presence (queryUsers with presence: true).
 * `events` holds { t, user, online } for each user.presence.changed it received.
 */
export async function startPeer(baseURL, userId, watched) {
  const client = new StreamChat(API_KEY, { baseURL, allowServerSideConnect: true, timeout: 5000 });
  client.logger = () => {};
  const events = [];
  client.on('user.presence.changed', (event) => {
    events.push({ t: Date.now(), user: event.user?.id, online: event.user?.online });
  });
  await client.connectUser({ id: userId }, client.devToken(userId));
  const { users } = watched.length
    ? await client.queryUsers({ id: { $in: watched } }, {}, { presence: true })
    : { users: [] };
  return {
    client,
    events,
    /** Presence events about `user` since `since`. */
    about: (user, since = 0) => events.filter((e) => e.user === user && e.t >= since),
    initial: Object.fromEntries(users.map((u) => [u.id, u.online])),
    /** Waits (bounded) for a presence event about `user` saying `online`; resolves with its time. */
    async waitFor(user, online, timeout, since = 0) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const hit = events.find((e) => e.user === user && e.online === online && e.t >= since);
        if (hit) return hit.t;
        if (Date.now() > deadline) {
          throw new Error(`peer ${userId} saw no ${user} online=${online} within ${timeout} ms: ${JSON.stringify(events)}`);
        }
        await new Promise((done) => setTimeout(done, 50));
      }
    },
    stop: () => client.disconnectUser().catch(() => {}),
  };
}

/**
 * Opens the test page in its own browser context (or as another tab of `context`) and waits for the package to be
 * loaded.
 */
export async function openClientPage(browser, siteURL, context = null) {
  const page = await (context ?? await browser.newContext()).newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    // Chromium's own report of each refused or failed connection and error answer (the tests cause them).
    if (/^Failed to load resource|^WebSocket connection to .* failed/.test(text)) return;
    page.problems.push(`console.error: ${text}`);
  });
  await page.goto(`${siteURL}/client.html`, { timeout: 15_000 });
  await page.waitForFunction(() => window.clientReady === true, null, { timeout: 15_000 });
  return page;
}

/**
 * Creates `window.client` in the page and connects `userId`, then follows `watched` users' presence.
 * `token`: 'dev' (a dev token), or 'provider' (an async provider calling the test's `mintToken` binding, each call
 * recorded in `window.tokenCalls`). Every client event lands in `window.events` as { t, type, online, user }.
 * Resolves with the connectUser outcome: { ok: true } or { ok: false, code, message }.
 */
export async function connectClient(
  page, { userId, baseURL, wsBaseURL, token = 'dev', watched = [], shareConnection },
) {
  return page.evaluate(async ({ userId, baseURL, wsBaseURL, token, watched, apiKey, shareConnection }) => {
    const client = new window.Client(apiKey, { baseURL, wsBaseURL, shareConnection });
    window.client = client;
    window.events = [];
    window.tokenCalls = [];
    client.on((event) => {
      window.events.push({
        t: Date.now(),
        type: event.type,
        online: event.online ?? event.user?.online,
        user: event.user?.id,
      });
    });
    const credential = token === 'provider'
      ? async () => {
        window.tokenCalls.push(Date.now());
        return window.mintToken();
      }
      : client.devToken(userId);
    try {
      await client.connectUser({ id: userId }, credential);
    } catch (error) {
      return { ok: false, code: error.code, message: String(error.message) };
    }
    if (watched.length) await client.queryUsers({ id: { $in: watched } }, [], { presence: true });
    return { ok: true };
  }, { userId, baseURL, wsBaseURL, token, watched, apiKey: API_KEY, shareConnection });
}

/** The page's record of its sockets: [{ url, createdAt, openedAt, closedAt, code, error }]. */
export const sockets = (page) => page.evaluate(() => window.sockets);
/** Client events since `since`, of `type` when given. */
export const clientEvents = (page, type, since = 0) => page.evaluate(
  ({ type, since }) => window.events.filter((e) => (!type || e.type === type) && e.t >= since),
  { type, since },
);

/** Waits (bounded) until the page's client has an event matching `match` (fields compared exactly) since `since`. */
export async function waitClientEvent(page, match, timeout, since = 0) {
  await page.waitForFunction(
    ({ match, since }) => window.events.some(
      (e) => e.t >= since && Object.entries(match).every(([k, v]) => e[k] === v),
    ),
    { match, since },
    { timeout, polling: 50 },
  );
  return page.evaluate(
    ({ match, since }) => window.events.find(
      (e) => e.t >= since && Object.entries(match).every(([k, v]) => e[k] === v),
    ).t,
    { match, since },
  );
}
