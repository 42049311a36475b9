// One user against everyone's queries: a fresh server is seeded with N users; the program times a plain unpinned
// queryUsers, then one 62 KB `$q` query (wall time and the server's CPU time), then has one user loop heavy queries
// on several connections while another user times the queries the SDK sends after a reconnect: queryChannels by
// `cid $in` (watch, presence) and a plain unpinned queryUsers.
// Usage: node bench/queryfair.mjs [--users 20000] [--loops 6] [--rounds 5] [--only capped] [--bin PATH] [--json FILE]
//   --only capped  skips the 62 KB query (minutes on a server without caps) and attacks with the capped filter only
//   (builds nothing: point --bin or PRESENCE_SERVER_BIN at the binary to measure)
import { readFileSync, writeFileSync, writeSync } from 'node:fs';
import { API_KEY, SERVER_BIN, devToken, fmt, isMain, median, parseArgs, serverToken, startServer } from './lib.mjs';

/** The server's user + system CPU time so far, in ms (Linux). */
function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function client(url, auth) {
  const headers = (user) => ({ Authorization: user ? devToken(user) : auth, 'stream-auth-type': 'jwt' });
  return {
    async queryUsers(user, payload, signal) {
      const q = new URLSearchParams({ api_key: API_KEY, payload: JSON.stringify(payload) });
      if (user) q.set('user_id', user);
      const r = await fetch(`${url}/users?${q}`, { headers: headers(user), signal: signal ?? AbortSignal.timeout(600_000) });
      return { status: r.status, body: await r.json().catch(() => null) };
    },
    async post(user, path, body) {
      const q = new URLSearchParams({ api_key: API_KEY });
      if (user) q.set('user_id', user);
      const r = await fetch(`${url}${path}?${q}`, {
        method: 'POST',
        headers: { ...headers(user), 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(600_000),
      });
      return { status: r.status, body: await r.json().catch(() => null) };
    },
  };
}

/** Runs `f`, with how long it took; a failed request counts as status 0 after that long. */
async function timed(f) {
  const started = performance.now();
  const r = await f().catch((e) => ({ status: 0, body: { message: String(e.cause ?? e) } }));
  return { ms: performance.now() - started, ...r };
}

/** The reported query: 62 KB of `$q` words every user's name contains. */
const bigQ = () => ({ filter_conditions: { name: { $q: Array(12_400).fill('user').join(' ') } } });
/** The costliest filter the caps let through over these users: 100 searches of 10 words, all evaluated. */
const cappedHeavy = () => {
  const q = 'user lorem ipsum dolor sit amet consectetur adipiscing elit absent';
  const searches = Array.from({ length: 50 }, () => ({ name: { $q: q } }));
  return { filter_conditions: { $nor: searches, $and: [{ $nor: searches }] } };
};
const plain = () => ({ filter_conditions: { role: 'admin' } });

/** Prints at once: a crash must not lose what was measured. */
const say = (line) => writeSync(1, `${line}\n`);

export async function run({ users = 20_000, loops = 6, rounds = 5, bin = SERVER_BIN, only, log = say } = {}) {
  const server = await startServer([], bin);
  try {
    const api = client(server.url, serverToken(bin));
    for (let from = 0; from < users; from += 100) {
      const batch = {};
      for (let i = from; i < Math.min(users, from + 100); i++) {
        batch[`u${i}`] = { id: `u${i}`, name: `user ${i} lorem ipsum dolor sit amet consectetur adipiscing elit` };
      }
      const r = await api.post(null, '/users', { users: batch });
      if (r.status !== 201) throw new Error(`upsert: ${r.status} ${JSON.stringify(r.body)}`);
    }
    await api.post(null, '/users', { users: { alice: { id: 'alice' }, mallory: { id: 'mallory' } } });
    for (const id of ['a1', 'a2']) {
      await api.post(null, `/channels/messaging/${id}/query`, { data: { members: ['alice', 'u1'], created_by_id: 'alice' } });
    }
    const plainMs = [];
    for (let i = 0; i < 5; i++) plainMs.push((await timed(() => api.queryUsers('alice', plain()))).ms);
    const plainCost = median(plainMs);
    log(`plain unpinned queryUsers over ${users} users: median ${fmt(plainCost, 1)} ms`);

    const cpuBefore = cpuMs(server.pid);
    const big = only === 'capped' ? { status: 0, ms: 0 } : await timed(() => api.queryUsers('mallory', bigQ()));
    const bigCpu = cpuMs(server.pid) - cpuBefore;
    log(`62 KB $q: HTTP ${big.status} after ${fmt(big.ms)} ms, server CPU ${fmt(bigCpu)} ms${big.status === 200 ? '' : ` (${big.body?.message?.slice(0, 120)})`}`);
    const capped = await timed(() => api.queryUsers('mallory', cappedHeavy()));
    log(`costliest capped filter: HTTP ${capped.status} after ${fmt(capped.ms)} ms`);

    const attacks = {};
    const kinds = [['62 KB $q', bigQ()], ['costliest capped filter', cappedHeavy()]];
    for (const [name, payload] of kinds.filter(([kind]) => only !== 'capped' || kind !== '62 KB $q')) {
      const stop = new AbortController();
      const looping = Array.from({ length: loops }, async () => {
        while (!stop.signal.aborted) await api.queryUsers('mallory', payload, stop.signal).catch(() => {});
      });
      await new Promise((done) => setTimeout(done, Math.max(1000, name === '62 KB $q' ? big.ms : capped.ms)));
      const recovery = [];
      const unpinned = [];
      for (let i = 0; i < rounds; i++) {
        const r = await timed(() => api.post('alice', '/channels', {
          filter_conditions: { cid: { $in: ['messaging:a1', 'messaging:a2'] } }, watch: true, presence: true, state: true,
        }));
        recovery.push(r.ms);
        unpinned.push((await timed(() => api.queryUsers('alice', plain()))).ms);
      }
      stop.abort();
      await Promise.allSettled(looping);
      attacks[name] = { recovery_ms: recovery, unpinned_ms: unpinned };
      log(`while mallory loops the ${name} on ${loops} connections: alice's recovery queryChannels median ${fmt(median(recovery))} ms (max ${fmt(Math.max(...recovery))}), plain queryUsers median ${fmt(median(unpinned))} ms (max ${fmt(Math.max(...unpinned))})`);
      await new Promise((done) => setTimeout(done, 1000));
    }
    return { users, plain_ms: plainCost, big_q: { status: big.status, ms: big.ms, cpu_ms: bigCpu }, capped: { status: capped.status, ms: capped.ms }, attacks };
  } finally {
    await server.stop();
  }
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const result = await run({ users: args.users, loops: args.loops, rounds: args.rounds, only: args.only, bin: args.bin ?? SERVER_BIN });
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
  process.exit(0);
}
