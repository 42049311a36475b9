// Measures how long a client that stops answering (frozen tab, vanished laptop, crashed process that left its
// TCP connection open) keeps looking online to a peer, with the server's default timing.
// Usage: node bench/crash_offline.mjs [path/to/presence-server]   (default target/debug/presence-server)
// Starts its own server on a free loopback port and stops it; prints one number.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import WebSocket from 'ws';

const bin = process.argv[2] || 'target/debug/presence-server';
const key = 'bench-key';
const server = spawn(bin, ['--addr', '127.0.0.1:0', '--db', ':memory:', '--api-key', key, '--api-secret', 's',
  '--dev-tokens'], { stdio: ['ignore', 'pipe', 'ignore'] });
const base = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/listening on (http:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  server.once('exit', () => reject(new Error('the server exited')));
});
const stop = (code) => { server.kill('SIGTERM'); process.exit(code); };
setTimeout(() => { console.error('no offline event within 60 s'); stop(1); }, 60_000).unref();

const devToken = (id) => `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.${Buffer.from(JSON.stringify({ user_id: id })).toString('base64')}.devtoken`;
async function open(id) {
  const json = encodeURIComponent(JSON.stringify({ user_id: id, user_details: { id } }));
  const ws = new WebSocket(`${base.replace('http', 'ws')}/connect?json=${json}&api_key=${key}&authorization=${devToken(id)}&stream-auth-type=jwt`);
  const [hello] = await once(ws, 'message');
  return { ws, connectionId: JSON.parse(hello).connection_id };
}

const alice = await open('alice');
const bob = await open('bob');
const payload = encodeURIComponent(JSON.stringify({ filter_conditions: { id: 'alice' }, presence: true }));
const answer = await fetch(`${base}/users?api_key=${key}&connection_id=${bob.connectionId}&payload=${payload}`,
  { headers: { Authorization: devToken('bob') } }).then((r) => r.json());
if (answer.users?.[0]?.online !== true) { console.error('alice is not online to start with'); stop(1); }

const frozenAt = Date.now();
alice.ws._socket.pause(); // stop reading: no pongs, no frames, no close
bob.ws.on('message', (raw) => {
  const e = JSON.parse(raw);
  if (e.type === 'user.presence.changed' && e.user.id === 'alice' && e.user.online === false) {
    console.log(`frozen client seen offline by a peer after ${Date.now() - frozenAt} ms (defaults: pong timeout 10000 ms + grace 3000 ms)`);
    stop(0);
  }
});
