#!/usr/bin/env node
// Seeds the demo: a few users and the channel messaging:demo, through the server's REST API with a server-side
// token. Users that already exist are left as they are (their status and invisibility survive restarts); the
// channel is created only when missing.
//
//   node scripts/seed.mjs [--base-url http://127.0.0.1:7070] [--api-key demo-key] [--api-secret demo-secret-change-me]
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

/** An HS256 server-side token `{"server": true}`, as Stream's server SDKs sign it. */
export function serverToken(secret) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url({ server: true })}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
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
 * (name and status back to the seed values, visible).
 */
export async function seed({ baseURL, apiKey, apiSecret, users = DEMO_USERS, channel = DEMO_CHANNEL, reset = false }) {
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
  return { created: missing.map((u) => u.id), channel: `${channel.type}:${channel.id}` };
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
    });
    const created = result.created.length ? `created ${result.created.join(', ')}` : 'demo users already there';
    console.log(`seeded: ${created}; channel ${result.channel}`);
  } catch (error) {
    console.error(`seed.mjs: ${error.message}`);
    process.exit(1);
  }
}
