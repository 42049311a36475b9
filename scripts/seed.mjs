#!/usr/bin/env node
// Seeds the demo: a few users and the channel messaging:demo, through the server's REST API with a server-side
// token. Users that already exist are left as they are (their status and invisibility survive restarts); the
// channel is created only when missing. With activity (the command's default), the users it creates besides the
// two the demo's URLs sign in as (alice, bob) connect for a moment and leave, so the roster reads like a team whose
// people were just around ("last active a minute ago") rather than "never active".
//
//   node scripts/seed.mjs [--base-url http://127.0.0.1:7070] [--api-key demo-key] [--api-secret demo-secret-change-me]
//                         [--no-activity]
//
// Defaults come from PRESENCE_ADDR, PRESENCE_API_KEY and PRESENCE_API_SECRET. Also importable: seed({...}).
import { createHmac } from 'node:crypto';
import { pathToFileURL } from 'node:url';

export const DEMO_USERS = [
  { id: 'alice', name: 'Alice Martin', status: 'Eating a veggie burger...' },
  { id: 'bob', name: 'Bob Chen', status: 'Reviewing pull requests' },
  { id: 'carol', name: 'Carol Diaz', status: 'In a meeting until 3' },
  { id: 'dave', name: 'Dave Okafor', status: 'On holiday' },
  { id: 'erin', name: 'Erin Walsh', status: 'Deep work, notifications off' },
];
export const DEMO_CHANNEL = { type: 'messaging', id: 'demo', name: 'Demo', members: ['alice', 'bob', 'carol', 'dave'] };

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

function sign(claims, secret) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** An HS256 server-side token `{"server": true}`, as Stream's server SDKs sign it. */
export function serverToken(secret) {
  return sign({ server: true }, secret);
}

/** Users the demo's URLs sign in as: they stay as created, never active until someone opens their page. */
const SIGN_IN_USERS = new Set(['alice', 'bob']);

/**
 * `userId` connects as a browser would (a user token, the first `health.check` answered) and leaves with close
 * 1000: peers see them offline at once, last active now.
 */
async function visit(baseURL, apiKey, apiSecret, userId) {
  const { default: WebSocket } = await import('ws');
  const url = new URL('/connect', baseURL);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('json', JSON.stringify({ user_id: userId, user_details: { id: userId } }));
  url.searchParams.set('api_key', apiKey);
  url.searchParams.set('authorization', sign({ user_id: userId }, apiSecret));
  url.searchParams.set('stream-auth-type', 'jwt');
  await new Promise((done, fail) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      fail(new Error(`${userId} could not connect within 10 s`));
    }, 10_000);
    ws.once('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type !== 'health.check') {
        clearTimeout(timer);
        ws.terminate();
        fail(new Error(`${userId} could not connect: ${String(data)}`));
        return;
      }
      ws.close(1000);
    });
    ws.once('close', () => {
      clearTimeout(timer);
      done();
    });
    ws.once('error', (error) => {
      clearTimeout(timer);
      fail(error);
    });
  });
}

async function call(baseURL, apiKey, token, method, path, { body, query = {} } = {}) {
  const url = new URL(path, baseURL);
  url.searchParams.set('api_key', apiKey);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const response = await fetch(url, {
    method,
    headers: { Authorization: token, 'stream-auth-type': 'jwt', 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} failed with ${response.status}: ${text}`);
  return text ? JSON.parse(text) : {};
}

/**
 * Creates the demo users that are missing and the demo channel. With `reset`, every demo user is written again
 * (name and status back to the seed values, visible). With `activity`, the users created here other than alice
 * and bob connect for a moment and leave (their `last_active` is then now).
 */
export async function seed({
  baseURL, apiKey, apiSecret, users = DEMO_USERS, channel = DEMO_CHANNEL, reset = false, activity = false,
}) {
  const token = serverToken(apiSecret);
  const ids = users.map((u) => u.id);
  let missing = users;
  if (!reset) {
    const payload = JSON.stringify({ filter_conditions: { id: { $in: ids } }, limit: 100 });
    const found = await call(baseURL, apiKey, token, 'GET', '/users', { query: { payload } });
    const existing = new Set((found.users || []).map((u) => u.id));
    missing = users.filter((u) => !existing.has(u.id));
  }
  if (missing.length > 0) {
    const body = { users: Object.fromEntries(missing.map((u) => [u.id, reset ? { ...u, invisible: false } : u])) };
    await call(baseURL, apiKey, token, 'POST', '/users', { body });
  }
  await call(baseURL, apiKey, token, 'POST', `/channels/${channel.type}/${channel.id}/query`, {
    body: { data: { name: channel.name, members: channel.members }, state: true },
  });
  const visited = activity ? missing.map((u) => u.id).filter((id) => !SIGN_IN_USERS.has(id)) : [];
  for (const id of visited) await visit(baseURL, apiKey, apiSecret, id);
  return { created: missing.map((u) => u.id), visited, channel: `${channel.type}:${channel.id}` };
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--base-url') out.baseURL = next();
    else if (arg === '--api-key') out.apiKey = next();
    else if (arg === '--api-secret') out.apiSecret = next();
    else if (arg === '--reset') out.reset = true;
    else if (arg === '--no-activity') out.activity = false;
    else throw new Error(`unknown option ${arg}`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] || '').href) {
  try {
    const args = parseArgs(process.argv.slice(2));
    const result = await seed({
      baseURL: args.baseURL || `http://${process.env.PRESENCE_ADDR || '127.0.0.1:7070'}`,
      apiKey: args.apiKey || process.env.PRESENCE_API_KEY || 'demo-key',
      apiSecret: args.apiSecret || process.env.PRESENCE_API_SECRET || 'demo-secret-change-me',
      reset: args.reset === true,
      activity: args.activity !== false,
    });
    const created = result.created.length ? `created ${result.created.join(', ')}` : 'demo users already there';
    const visited = result.visited.length ? `; ${result.visited.join(', ')} were active a moment ago` : '';
    console.log(`seeded: ${created}; channel ${result.channel}${visited}`);
  } catch (error) {
    console.error(`seed.mjs: ${error.message}`);
    process.exit(1);
  }
}
