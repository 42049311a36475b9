// Cluster mode on a shared PostgreSQL (`--redis-url` with `--database-url`): each node commits only the entries
// it appended itself. A node restarted with the same id replays the log from its start, so what its predecessor
// appended must not be committed again over what other nodes wrote since. Run from the repository root:
// node --test server/tests/sdk/   (needs redis-server and PostgreSQL: bash scripts/setup.sh --cluster)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StreamChat } from 'stream-chat';
import { freePort, stop, waitFor } from './processes.mjs';

const BIN = path.resolve(process.env.PRESENCE_SERVER_BIN || 'target/debug/presence-server');
const REDIS = process.env.PRESENCE_REDIS_SERVER || 'redis-server';
const KEY = 'cluster-pg-test-key';
const SECRET = 'cluster-pg-test-secret-0123456789';

const dir = mkdtempSync(path.join(os.tmpdir(), 'presence-cluster-pg-'));
// PostgreSQL runs as its own user (it refuses root) and must reach its folder inside this one.
chmodSync(dir, 0o755);
const procs = [];
let redisPort;
let databaseUrl;

/** A server process on the shared database; in the cluster unless `nodeId` is null. */
async function startServer(nodeId) {
  assert.ok(existsSync(BIN), `server binary not found at ${BIN} (build it or set PRESENCE_SERVER_BIN)`);
  const args = ['--addr', '127.0.0.1:0', '--database-url', databaseUrl, '--api-key', KEY, '--api-secret', SECRET,
    '--admin-addr', 'off'];
  if (nodeId !== null) args.push('--redis-url', `redis://127.0.0.1:${redisPort}`, '--node-id', nodeId);
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stderr.on('data', () => {});
  procs.push(proc);
  const [, url] = await waitFor(proc, 'stdout', /listening on (http:\/\/127\.0\.0\.1:\d+)/, `server ${nodeId ?? 'alone'}`);
  return { proc, api: new StreamChat(KEY, SECRET, { baseURL: url, timeout: 5000 }) };
}

async function status(api, id) {
  const { users } = await api.queryUsers({ id: { $eq: id } });
  return users[0]?.status;
}

before(async () => {
  const pg = spawnSync('bash', ['scripts/pg.sh', 'start', path.join(dir, 'pg')], { encoding: 'utf8' });
  assert.equal(pg.status, 0, `PostgreSQL did not start (bash scripts/setup.sh --cluster installs it):\n${pg.stderr}`);
  databaseUrl = pg.stdout.trim().split('\n').pop();
  redisPort = await freePort();
  const redis = spawn(REDIS, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  redis.once('error', () => {});
  procs.push(redis);
  await waitFor(redis, 'stdout', /Ready to accept connections/, 'redis-server (bash scripts/setup.sh --cluster installs it)');
});

after(async () => {
  for (const proc of procs.reverse()) await stop(proc);
  spawnSync('bash', ['scripts/pg.sh', 'stop', path.join(dir, 'pg')]);
  rmSync(dir, { recursive: true, force: true });
});

test('a node restarted with the same id does not write its predecessor\'s entries over newer ones', async () => {
  const a = await startServer('pg-a');
  let b = await startServer('pg-b');
  await b.api.upsertUser({ id: 'ann', status: 'first, through b' });
  await b.api.partialUpdateUser({ id: 'ann', set: { status: 'second, through b' } });
  await a.api.partialUpdateUser({ id: 'ann', set: { status: 'third, through a' } });
  assert.equal(await status(b.api, 'ann'), 'third, through a', 'read your writes across nodes');

  await stop(b.proc, 'SIGKILL');
  b = await startServer('pg-b');
  assert.equal(await status(b.api, 'ann'), 'third, through a', 'the restarted node replayed the log');
  await b.api.upsertUser({ id: 'bea', status: 'after the restart' });

  // What the database holds, read by a process of its own, without the cluster log.
  await stop(a.proc);
  await stop(b.proc);
  const alone = await startServer(null);
  assert.equal(await status(alone.api, 'ann'), 'third, through a', 'the database kept the newest write');
  assert.equal(await status(alone.api, 'bea'), 'after the restart');
});
