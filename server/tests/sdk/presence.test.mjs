// The official `stream-chat` SDK (9.53.0) against presence-server, with only `baseURL` pointed at it.
// Run from the repository root: node --test server/tests/sdk/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { StreamChat } from 'stream-chat';
import { stop } from './processes.mjs';

const BIN = path.resolve(process.env.PRESENCE_SERVER_BIN || 'target/debug/presence-server');
const KEY = 'sdk-test-key';
const SECRET = 'sdk-test-secret-0123456789abcdef';
const GRACE_MS = 3000;
const WAIT_MS = 5000;

const servers = [];
const clients = [];

/** Start the server; resolves with its base URL once it prints `listening on http://...`. */
function startServer(extra = []) {
  assert.ok(existsSync(BIN), `server binary not found at ${BIN} (build it or set PRESENCE_SERVER_BIN)`);
  const args = [
    '--addr', '127.0.0.1:0', '--db', ':memory:', '--api-key', KEY, '--api-secret', SECRET,
    '--offline-grace-ms', String(GRACE_MS), '--admin-addr', 'off', ...extra,
  ];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(proc);
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start within 30 s; stderr:\n${stderr}`)), 30000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early with ${code}; stderr:\n${stderr}`));
    });
    proc.stdout.on('data', (d) => {
      out += d.toString();
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

/** A browser-like client: no secret, pointed at our server. */
function newClient(baseURL) {
  const client = new StreamChat(KEY, { baseURL, allowServerSideConnect: true, timeout: 5000 });
  client.logger = () => {};
  clients.push(client);
  return client;
}

/** A server-side client (signs server tokens, mints user tokens). */
function newServerClient(baseURL) {
  const client = new StreamChat(KEY, SECRET, { baseURL, timeout: 5000 });
  client.logger = () => {};
  return client;
}

/** Resolve with the first event of `type` satisfying `pred`, or reject after `ms`. Listen before acting. */
function nextEvent(client, type, pred = () => true, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`no ${type} within ${ms} ms`));
    }, ms);
    const sub = client.on(type, (event) => {
      if (pred(event)) {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(event);
      }
    });
  });
}

/** Collect events of `type` satisfying `pred` for `ms`. */
async function eventsDuring(client, type, pred, ms) {
  const got = [];
  const sub = client.on(type, (event) => {
    if (pred(event)) got.push(event);
  });
  await new Promise((r) => setTimeout(r, ms));
  sub.unsubscribe();
  return got;
}

const presenceOf = (id, online) => (e) => e.user?.id === id && (online === undefined || e.user.online === online);

let baseURL; // --dev-tokens server
let strictURL; // no dev tokens
let server;

before(async () => {
  [baseURL, strictURL] = await Promise.all([startServer(['--dev-tokens']), startServer()]);
  server = newServerClient(baseURL);
  await server.upsertUsers([
    { id: 'alice', name: 'Alice', status: 'busy' },
    { id: 'bob', name: 'Bob' },
    { id: 'carol', name: 'Carol' },
    { id: 'dave', name: 'Dave' },
  ]);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => (c.userID ? c.disconnectUser(500) : null)));
  await Promise.all(servers.map((proc) => stop(proc)));
});

test('connectUser with a JWT', { timeout: 20000 }, async () => {
  const alice = newClient(baseURL);
  const res = await alice.connectUser({ id: 'alice', name: 'Alice', status: 'busy' }, server.createToken('alice'));
  assert.equal(res.type, 'health.check');
  assert.ok(res.connection_id, 'connection_id');
  assert.equal(res.me.id, 'alice');
  assert.ok(Array.isArray(res.me.mutes) && Array.isArray(res.me.channel_mutes));
  assert.equal(alice.user.online, true);
  assert.equal(alice.user.status, 'busy');
  assert.equal(alice.user.invisible, false);
  assert.equal(alice._getConnectionID(), res.connection_id);
  // REST calls authenticate with the same token.
  const { users } = await alice.queryUsers({ id: { $in: ['alice', 'bob'] } }, [{ id: 1 }]);
  assert.deepEqual(users.map((u) => u.id), ['alice', 'bob']);
  assert.equal(users[0].online, true);
  await alice.disconnectUser();
});

test('connectUser with a dev token, only where dev tokens are enabled', { timeout: 20000 }, async () => {
  const dev = newClient(baseURL);
  const res = await dev.connectUser({ id: 'dave' }, dev.devToken('dave'));
  assert.equal(res.me.id, 'dave');
  assert.equal(res.me.name, 'Dave');
  await dev.disconnectUser();

  const strict = newClient(strictURL);
  const started = Date.now();
  await assert.rejects(strict.connectUser({ id: 'dave' }, strict.devToken('dave')), (err) => {
    const body = JSON.parse(err.message);
    assert.equal(body.code, 43);
    assert.equal(body.StatusCode, 401);
    assert.equal(body.isWSFailure, false, 'an auth failure, not a network failure');
    return true;
  });
  assert.ok(Date.now() - started < 5000, 'the rejection is immediate (connection.error + close 1000), not a retry loop');
});

test('a second client sees connect and disconnect via queryUsers presence', { timeout: 20000 }, async () => {
  const bob = newClient(baseURL);
  await bob.connectUser({ id: 'bob' }, server.createToken('bob'));
  const { users } = await bob.queryUsers({ id: { $in: ['alice'] } }, [], { presence: true });
  assert.equal(users[0].online, false);

  const alice = newClient(baseURL);
  const online = nextEvent(bob, 'user.presence.changed', presenceOf('alice', true));
  await alice.connectUser({ id: 'alice' }, server.createToken('alice'));
  const ev = await online;
  assert.equal(ev.user.name, 'Alice');
  assert.equal(ev.user.status, 'busy');
  assert.ok(ev.user.last_active);
  assert.equal(bob.state.users.alice.online, true, 'the SDK applied the event to its user cache');

  const offline = nextEvent(bob, 'user.presence.changed', presenceOf('alice', false));
  const t0 = Date.now();
  await alice.disconnectUser();
  await offline;
  const took = Date.now() - t0;
  assert.ok(took < GRACE_MS / 2, `disconnectUser is an explicit close: offline after ${took} ms (grace ${GRACE_MS} ms)`);
  assert.equal(bob.state.users.alice.online, false);
  await bob.disconnectUser();
});

test('upsertUser invisible and visible', { timeout: 25000 }, async () => {
  const bob = newClient(baseURL);
  await bob.connectUser({ id: 'bob' }, server.createToken('bob'));
  await bob.queryUsers({ id: 'carol' }, [], { presence: true });
  const carol = newClient(baseURL);
  const online = nextEvent(bob, 'user.presence.changed', presenceOf('carol', true));
  await carol.connectUser({ id: 'carol', name: 'Carol' }, server.createToken('carol'));
  await online;

  // Invisible through a server-side upsert: bob sees carol go offline, carol sees herself invisible.
  const offline = nextEvent(bob, 'user.presence.changed', presenceOf('carol', false));
  const ownUpdate = nextEvent(carol, 'user.updated', (e) => e.user?.id === 'carol' && e.user.invisible === true);
  const res = await server.upsertUser({ id: 'carol', name: 'Carol', invisible: true });
  // The backend's answer reads carol as its queryUsers does: offline, the flag itself not shown.
  assert.equal(res.users.carol.online, false);
  assert.equal(res.users.carol.invisible, undefined);
  const off = await offline;
  assert.equal(off.user.invisible, undefined, 'the flag itself is not shown to others');
  await ownUpdate;
  assert.equal(carol.user.invisible, true);
  let seen = await bob.queryUsers({ id: 'carol' });
  assert.equal(seen.users[0].online, false);
  seen = await bob.queryUsers({ online: true });
  assert.ok(!seen.users.some((u) => u.id === 'carol'), 'online:true filter hides invisible carol');

  // Reconnecting keeps her invisible.
  await carol.disconnectUser();
  const carol2 = newClient(baseURL);
  const quiet = eventsDuring(bob, 'user.presence.changed', presenceOf('carol'), 1000);
  const again = await carol2.connectUser({ id: 'carol', name: 'Carol' }, server.createToken('carol'));
  assert.equal(again.me.invisible, true);
  assert.deepEqual(await quiet, [], 'an invisible user connecting tells nobody');

  // Visible again, through the user's own upsert.
  const back = nextEvent(bob, 'user.presence.changed', presenceOf('carol', true));
  const own = await carol2.upsertUser({ id: 'carol', name: 'Carol', invisible: false });
  assert.equal(own.users.carol.invisible, false, 'a user writing itself reads its own view');
  await back;
  seen = await bob.queryUsers({ id: 'carol' });
  assert.equal(seen.users[0].online, true);

  // And with a partial update.
  const hidden = nextEvent(bob, 'user.presence.changed', presenceOf('carol', false));
  await carol2.partialUpdateUser({ id: 'carol', set: { invisible: true } });
  await hidden;
  const shown = nextEvent(bob, 'user.presence.changed', presenceOf('carol', true));
  await carol2.partialUpdateUser({ id: 'carol', set: { invisible: false, status: 'back' } });
  const ev = await shown;
  assert.equal(ev.user.status, 'back');
  await carol2.disconnectUser();
  await bob.disconnectUser();
});

test('channel watch with presence', { timeout: 25000 }, async () => {
  const bob = newClient(baseURL);
  await bob.connectUser({ id: 'bob' }, server.createToken('bob'));
  const channel = bob.channel('messaging', 'sdk-room', { members: ['alice', 'bob'] });
  const state = await channel.watch({ presence: true });
  assert.equal(state.channel.cid, 'messaging:sdk-room');
  assert.deepEqual(state.members.map((m) => m.user_id).sort(), ['alice', 'bob']);
  assert.equal(channel.state.members.alice.user.online, false);
  assert.equal(channel.state.watcher_count, 1);

  const alice = newClient(baseURL);
  const online = nextEvent(bob, 'user.presence.changed', presenceOf('alice', true));
  await alice.connectUser({ id: 'alice' }, server.createToken('alice'));
  await online;
  assert.equal(channel.state.members.alice.user.online, true, 'member state updated by the event');
  assert.equal(channel.state.members.alice.user.name, 'Alice', 'the complete user object replaced the member');

  // alice starts watching too: bob's channel hears it.
  const watching = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no user.watching.start')), WAIT_MS);
    const sub = channel.on('user.watching.start', (e) => {
      if (e.user?.id === 'alice') {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(e);
      }
    });
  });
  await alice.channel('messaging', 'sdk-room').watch();
  const w = await watching;
  assert.equal(w.watcher_count, 2);
  assert.equal(channel.state.watcher_count, 2);

  const offline = nextEvent(bob, 'user.presence.changed', presenceOf('alice', false));
  await alice.disconnectUser();
  await offline;
  assert.equal(channel.state.members.alice.user.online, false);
  await bob.disconnectUser();
});

test('distinct channels and queryChannels as the SDK sends them', { timeout: 20000 }, async () => {
  const bob = newClient(baseURL);
  await bob.connectUser({ id: 'bob' }, server.createToken('bob'));
  const distinct = bob.channel('messaging', { members: ['bob', 'dave'] });
  await distinct.watch({ presence: true });
  assert.ok(distinct.id.startsWith('!members-'), distinct.id);
  // The SDK's own recovery query shape (sort on last_message_at) and a presence subscription.
  const channels = await bob.queryChannels(
    { members: { $in: ['bob'] } },
    [{ last_message_at: -1 }],
    { watch: true, presence: true, limit: 30 },
  );
  assert.ok(channels.some((c) => c.cid === distinct.cid));
  const dave = newClient(baseURL);
  const online = nextEvent(bob, 'user.presence.changed', presenceOf('dave', true));
  await dave.connectUser({ id: 'dave' }, server.createToken('dave'));
  await online;
  await distinct.stopWatching();
  await dave.disconnectUser();
  await bob.disconnectUser();
});

test('addMembers and removeMembers: watchers see members come and go, and follow the presence of members only', { timeout: 25000 }, async () => {
  await server.upsertUsers([{ id: 'mia', name: 'Mia' }, { id: 'noel', name: 'Noel' }]);
  await server.channel('messaging', 'sdk-members', { members: ['mia'], created_by_id: 'mia' }).create();
  const mia = newClient(baseURL);
  await mia.connectUser({ id: 'mia' }, server.createToken('mia'));
  const channel = mia.channel('messaging', 'sdk-members');
  await channel.watch({ presence: true });
  assert.deepEqual(Object.keys(channel.state.members), ['mia']);
  const channelEvent = (type, id) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} about ${id}`)), WAIT_MS);
      const sub = channel.on(type, (e) => {
        if (e.user?.id === id) {
          clearTimeout(timer);
          sub.unsubscribe();
          resolve(e);
        }
      });
    });

  // A backend adds noel with the SDK's addMembers: mia's channel state gains him.
  const added = channelEvent('member.added', 'noel');
  const res = await server.channel('messaging', 'sdk-members').addMembers(['noel']);
  assert.equal(res.channel.member_count, 2);
  assert.deepEqual(res.members.map((m) => m.user_id), ['mia', 'noel']);
  const ev = await added;
  assert.equal(ev.member.user_id, 'noel');
  assert.equal(channel.state.members.noel.user.name, 'Noel');
  assert.equal(channel.state.members.noel.user.online, false);

  // noel's presence now reaches mia.
  const noel = newClient(baseURL);
  const online = nextEvent(mia, 'user.presence.changed', presenceOf('noel', true));
  await noel.connectUser({ id: 'noel' }, server.createToken('noel'));
  const seen = await online;
  assert.equal(seen.user.name, 'Noel');
  // The SDK applies presence to the members it loaded with the channel only; its user cache has noel online.
  assert.equal(mia.state.users.noel.online, true);

  // mia, a member, removes him with removeMembers on her own token; his presence no longer reaches her.
  const removed = channelEvent('member.removed', 'noel');
  const after = await channel.removeMembers(['noel']);
  assert.equal(after.channel.member_count, 1);
  assert.equal(channel.data.member_count, 1, 'the SDK took the answer\'s channel');
  await removed;
  assert.equal(channel.state.members.noel, undefined);
  const quiet = eventsDuring(mia, 'user.presence.changed', presenceOf('noel'), 1000);
  await noel.disconnectUser();
  assert.deepEqual(await quiet, [], 'a member who left is not followed');

  // noel, no longer a member, may not add himself back.
  const back = newClient(baseURL);
  await back.connectUser({ id: 'noel' }, server.createToken('noel'));
  await assert.rejects(back.channel('messaging', 'sdk-members').addMembers(['noel']), (err) => {
    assert.equal(err.code, 17);
    assert.equal(err.status, 403);
    return true;
  });
  await back.disconnectUser();
  await mia.disconnectUser();
});

test('at the connection cap a silent socket gives way, and a refused reconnect (71, close 1013) is retried', { timeout: 45000 }, async () => {
  const url = await startServer(['--max-connections-per-user', '1', '--ping-interval-ms', '300', '--pong-timeout-ms', '30000']);
  const admin = newServerClient(url);
  await admin.upsertUsers([{ id: 'erin' }]);
  const erin = newClient(url);
  const closes = [];
  erin.logger = (_level, message) => {
    const m = /^connection:onclose\(\) - onclose callback - (\d+)$/.exec(message);
    if (m) closes.push(Number(m[1]));
  };
  await erin.connectUser({ id: 'erin' }, admin.createToken('erin'));

  // erin's socket stops being read (a frozen tab, a dead network): the server's pings go unanswered.
  const frozen = erin.wsConnection.ws._socket;
  frozen.pause();
  await new Promise((r) => setTimeout(r, 1000));
  // Another device of erin's takes the only slot from the silent connection.
  const device = newClient(url);
  await device.connectUser({ id: 'erin' }, admin.createToken('erin'));

  // Once erin reads again she finds the 4002 close and reconnects; the device holds the slot and answers pings,
  // so the server refuses with code 71 and close 1013, and she keeps retrying with backoff. (She wakes only once
  // the server is done closing her old socket: pongs it no longer reads would make it reset the connection, and
  // the reset can beat the close frame.)
  await new Promise((r) => setTimeout(r, 1000));
  frozen.resume();
  const deadline = Date.now() + 15000;
  while (!closes.includes(1013) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(closes.slice(0, 2), [4002, 1013], `close codes erin's client saw: ${closes}`);
  assert.equal(erin.wsConnection.isHealthy, false);

  // The device leaves: a later retry gets through.
  const recovered = nextEvent(erin, 'connection.recovered', () => true, 20000);
  await device.disconnectUser();
  await recovered;
  assert.equal(erin.wsConnection.isHealthy, true);
  const { users } = await admin.queryUsers({ id: 'erin' });
  assert.equal(users[0].online, true);
  await erin.disconnectUser();
});
