// Event ingest in headless Chromium: the same stream of `user.presence.changed` frames, replayed over a local
// WebSocket, into one page per client — a bare WebSocket + JSON.parse page (the floor), stream-chat, and ours.
// Each page has one listener reading `event.user.online`, and its user cache is updated (the SDKs do it themselves,
// the bare page keeps a Map). Measured per page with the Chrome DevTools Protocol: main-thread time per event
// (Performance.getMetrics TaskDuration and ScriptDuration, before/after), wall events/s inside the page, and the JS
// heap (after a forced GC) and wasm memory once the cache holds every user.
//
// The frames come from a Node `ws` server that performs the handshake both SDKs need (a `health.check` first frame
// with `connection_id` and `me`, replies to their pings) and then sends the frames as fast as the socket takes them.
// Usage: node bench/ingest.mjs [--frames 100000] [--users 10000] [--runs 3] [--clients bare,stream-chat,ours]
//        [--profile [FRAMES]] [--profile-dir DIR] [--json FILE]
//   --profile: one more pass per page under the CDP sampling profiler (20,000 frames unless given), summarised
//              as self time by kind and the heaviest functions; --profile-dir keeps the .cpuprofile files (they
//              open in Chrome DevTools' Performance panel).
//        (needs pkg/: bash scripts/build-wasm.sh; Chromium at /usr/bin/chromium or CHROMIUM_BIN)
import { createServer } from 'node:http';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import { WebSocketServer } from 'ws';
import { bundle } from './bundle.mjs';
import { CHROMIUM, CHROMIUM_ARGS, ROOT, fmt, isMain, median, parseArgs, pinnedVersion } from './lib.mjs';

export const CLIENTS = ['bare', 'stream-chat', 'ours', 'bare-batched', 'ours-batched'];
const LABELS = {
  bare: 'bare WebSocket + JSON.parse',
  'stream-chat': 'stream-chat',
  ours: 'presence-client (ours), one event per message',
  'bare-batched': 'bare WebSocket + JSON.parse, batches of 10',
  'ours-batched': 'presence-client (ours), batches of 10',
};
/**
 * Events per message for each page: the batched pages get what a 10 ms window at 1,000 events/s gathers (the bare
 * one is the floor of that delivery, as the bare page is of one event per message).
 */
const PER_MESSAGE = { 'bare-batched': 10, 'ours-batched': 10 };
const API_KEY = 'ingest-key';
const SELF = 'reader';

// ---- the frames --------------------------------------------------------------------------------------------------

/**
 * `frames` presence events about `users` distinct users, cycling through them; each round flips everyone's
 * `online`, and every timestamp is later than the one before (a client may ignore events older than its cache).
 * The user object has the fields presence-server sends for a user with a name, image and status.
 */
export function makeFrames(frames, users) {
  const base = Date.parse('2026-01-01T00:00:00Z');
  const created = '2025-06-01T12:00:00.000000Z';
  const out = new Array(frames);
  for (let i = 0; i < frames; i++) {
    const u = i % users;
    const online = Math.floor(i / users) % 2 === 0;
    const at = new Date(base + i).toISOString().replace('Z', '000Z');
    out[i] = JSON.stringify({
      type: 'user.presence.changed',
      created_at: at,
      user: {
        id: `user-${u}`, name: `User ${u}`, image: `https://img.example.com/u/${u}.png`, role: 'user', language: '',
        teams: [], online, last_active: at, created_at: created, updated_at: created, banned: false,
        blocked_user_ids: [], status: u % 3 === 0 ? 'Eating a veggie burger...' : 'In a meeting',
      },
    });
  }
  return out;
}

function healthCheck(connectionId, withMe) {
  const now = new Date().toISOString();
  const frame = { type: 'health.check', created_at: now, connection_id: connectionId, cid: '*' };
  if (withMe) {
    frame.me = {
      id: SELF, role: 'user', language: '', teams: [], online: true, last_active: now, created_at: now, updated_at: now,
      banned: false, blocked_user_ids: [], invisible: false, devices: [], mutes: [], channel_mutes: [],
      unread_count: 0, total_unread_count: 0, unread_channels: 0, unread_threads: 0,
    };
  }
  return JSON.stringify(frame);
}

// ---- the pages ---------------------------------------------------------------------------------------------------

// What every page shares: `window.arm(n)` before the frames, `window.finished` resolves after the n-th event.
const PAGE_COMMON = `
window.bench = { count: 0, target: Infinity, online: 0, first: 0, last: 0 };
let finish;
window.arm = (n) => {
  Object.assign(window.bench, { count: 0, target: n, online: 0, first: 0, last: 0 });
  window.finished = new Promise((done) => { finish = done; });
};
function onPresence(event) {
  const b = window.bench;
  if (event.user.online) b.online++;
  if (b.count++ === 0) b.first = performance.now();
  if (b.count === b.target) { b.last = performance.now(); finish(); }
}
`;

/** The bare page: a WebSocket, JSON.parse and a Map; `batched`: a message may hold an array of events. */
const bare = (base, batched) => `
const users = new Map();
window.cacheSize = () => users.size;
window.wasmBytes = () => 0;
window.ready = new Promise((done) => {
  const ws = new WebSocket('${base.replace('http', 'ws')}/bare');
  const take = (event) => {
    if (event.type === 'health.check') return done();
    if (event.type === 'user.presence.changed') {
      users.set(event.user.id, event.user);
      onPresence(event);
    }
  };
  ws.onmessage = (message) => {
    const parsed = JSON.parse(message.data);
    ${batched ? 'if (Array.isArray(parsed)) { for (const event of parsed) take(event); return; }' : ''}
    take(parsed);
  };
});`;

const PAGE_SCRIPTS = {
  bare: (base) => bare(base, false),
  'bare-batched': (base) => bare(base, true),
  'stream-chat': (base) => `
import { StreamChat } from '/stream-chat.mjs';
const client = new StreamChat('${API_KEY}', { baseURL: '${base}' });
window.cacheSize = () => Object.keys(client.state.users).length;
window.wasmBytes = () => 0;
client.on('user.presence.changed', onPresence);
window.ready = client.connectUser({ id: '${SELF}' }, client.devToken('${SELF}'));`,
  ours: (base) => ours(base, 0),
  'ours-batched': (base) => ours(base, 10),
};

/** Our page: the client asking for batches of `batchMs` (0: one event per message, as stream-chat gets). */
const ours = (base, batchMs) => `
import init, { Client } from '/pkg/presence_client.js';
const wasm = await init();
const client = new Client('${API_KEY}', { baseURL: '${base}', batchMs: ${batchMs} });
window.cacheSize = () => Object.keys(client.state.users).length;
// The build may minify export names: find the module's memory by type.
const memory = Object.values(wasm).find((v) => v instanceof WebAssembly.Memory);
window.wasmBytes = () => memory.buffer.byteLength;
client.on('user.presence.changed', onPresence);
window.ready = client.connectUser({ id: '${SELF}' }, client.devToken('${SELF}'));`;

const page = (base, client) => `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>ingest: ${client}</title>
<script>${PAGE_COMMON}</script>
<script type="module">${PAGE_SCRIPTS[client](base)}</script>`;

// ---- the replay server -------------------------------------------------------------------------------------------

const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };

/** The HTTP + WebSocket server the pages load from and read frames from. */
async function startReplayServer(streamChatBundle) {
  let latest = null; // the socket of the page being measured
  let nextId = 0;
  const http = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const send = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'access-control-allow-origin': '*', 'cache-control': 'no-store' });
      res.end(body);
    };
    if (url.pathname === '/') return send(200, 'text/html', page(base, url.searchParams.get('client')));
    if (url.pathname === '/stream-chat.mjs') return send(200, 'text/javascript', streamChatBundle);
    if (url.pathname.startsWith('/pkg/')) {
      const file = normalize(join(ROOT, url.pathname));
      if (file.startsWith(join(ROOT, 'pkg')) && existsSync(file)) {
        return send(200, TYPES[extname(file)] || 'application/octet-stream', readFileSync(file));
      }
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-origin': '*', 'access-control-allow-headers': '*', 'access-control-allow-methods': '*' });
      return res.end();
    }
    return send(404, 'application/json', JSON.stringify({ code: 16, message: 'not part of the ingest benchmark', StatusCode: 404, duration: '0ms' }));
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://x');
    const sdk = url.pathname === '/connect';
    // The SDKs' handshake: a JSON payload naming the user, the API key and a token for that user.
    if (sdk) {
      let ok = url.searchParams.get('api_key') === API_KEY && Boolean(url.searchParams.get('authorization'));
      try {
        ok = ok && JSON.parse(url.searchParams.get('json')).user_id === SELF;
      } catch {
        ok = false;
      }
      if (!ok) {
        socket.destroy();
        return;
      }
    } else if (url.pathname !== '/bare') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const connectionId = `ingest-${++nextId}`;
      latest = ws;
      ws.send(healthCheck(connectionId, sdk));
      ws.on('message', (data) => {
        // Both SDKs ping with `[{"type":"health.check",...}]`; the server's reply re-arms their timers.
        if (String(data).includes('health.check')) ws.send(healthCheck(connectionId, false));
      });
    });
  });
  await new Promise((done) => http.listen(0, '127.0.0.1', done));
  const base = `http://127.0.0.1:${http.address().port}`;
  return {
    base,
    /**
     * Sends the frames to the newest socket in slices, yielding between them so the socket drains; `perMessage`
     * events to a message (more than one: a batch, `[event,event,...]`, as presence-server sends to a client that
     * asked for `batch_ms`).
     */
    async replay(frames, perMessage = 1) {
      const ws = latest;
      for (let i = 0; i < frames.length; i += 1000) {
        const end = Math.min(frames.length, i + 1000);
        if (perMessage > 1) {
          for (let j = i; j < end; j += perMessage) ws.send(`[${frames.slice(j, Math.min(end, j + perMessage)).join(',')}]`);
        } else {
          for (let j = i; j < end; j++) ws.send(frames[j]);
        }
        while (ws.bufferedAmount > 8 << 20) await new Promise((done) => setTimeout(done, 1));
        await new Promise((done) => setImmediate(done));
      }
    },
    close: () => new Promise((done) => {
      for (const ws of wss.clients) ws.terminate();
      http.close(done);
    }),
  };
}

// ---- one measurement ---------------------------------------------------------------------------------------------

async function metrics(cdp) {
  const { metrics: list } = await cdp.send('Performance.getMetrics');
  return Object.fromEntries(list.map((m) => [m.name, m.value]));
}

async function heapUsed(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  return (await cdp.send('Runtime.getHeapUsage')).usedSize;
}

/** Loads the page of `client`, connects, replays the frames and reads the figures. */
async function measure(browser, server, client, frames, expectedOnline, { profile = false } = {}) {
  const context = await browser.newContext();
  const tab = await context.newPage();
  const problems = [];
  tab.on('pageerror', (error) => problems.push(error.message));
  tab.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()); });
  try {
    await tab.goto(`${server.base}/?client=${client}`, { timeout: 30_000 });
    await tab.waitForFunction(() => window.ready, null, { timeout: 30_000 });
    await tab.evaluate(() => window.ready);
    const cdp = await context.newCDPSession(tab);
    await cdp.send('Performance.enable');
    await cdp.send('HeapProfiler.enable');
    const heapBefore = await heapUsed(cdp);
    await tab.evaluate((n) => window.arm(n), frames.length);
    if (profile) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
      await cdp.send('Profiler.start');
    }
    const before = await metrics(cdp);
    await server.replay(frames, PER_MESSAGE[client] ?? 1);
    await tab.evaluate(() => window.finished);
    const after = await metrics(cdp);
    const cpuProfile = profile ? (await cdp.send('Profiler.stop')).profile : undefined;
    const seen = await tab.evaluate(() => ({ ...window.bench, cache: window.cacheSize(), wasm: window.wasmBytes() }));
    const heapAfter = await heapUsed(cdp);
    if (seen.online !== expectedOnline) throw new Error(`${client}: ${seen.online} events read online, expected ${expectedOnline}`);
    if (problems.length) throw new Error(`${client}: page errors: ${problems.join('; ')}`);
    const n = frames.length;
    return {
      client,
      taskUsPerEvent: ((after.TaskDuration - before.TaskDuration) * 1e6) / n,
      scriptUsPerEvent: ((after.ScriptDuration - before.ScriptDuration) * 1e6) / n,
      eventsPerSec: (n - 1) / ((seen.last - seen.first) / 1000),
      heapBefore,
      heapAfter,
      wasmBytes: seen.wasm,
      cachedUsers: seen.cache,
      cpuProfile,
    };
  } finally {
    await context.close();
  }
}

/**
 * Self time of a CDP CPU profile: by kind (wasm, wasm↔JS transitions, JS, garbage collection, the engine's
 * native work) and the functions
 * that take the most. Wasm functions carry no names in the published build: they show as `wasm-function[N]`.
 */
export function profileSummary(profile, events) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) || 0) + (profile.timeDeltas[i + 1] ?? 0));
  }
  const kinds = { wasm: 0, boundary: 0, js: 0, gc: 0, engine: 0 };
  const functions = new Map();
  let busy = 0;
  for (const [id, us] of self) {
    const { callFrame: f } = byId.get(id);
    if (f.functionName === '(idle)') continue;
    busy += us;
    const kind = f.url.startsWith('wasm://') || /\.wasm(\?|$)/.test(f.url) ? 'wasm'
      : f.functionName === 'wasm-to-js' || f.functionName === 'js-to-wasm' ? 'boundary'
        : f.functionName === '(garbage collector)' ? 'gc'
          : f.functionName === '(program)' || (!f.url && f.functionName.startsWith('(')) ? 'engine' : 'js';
    kinds[kind] += us;
    const where = f.url ? ` ${f.url.split('/').pop().split('?')[0]}:${f.lineNumber + 1}:${f.columnNumber + 1}` : '';
    const name = `${f.functionName || '(anonymous)'}${where}`;
    functions.set(name, (functions.get(name) || 0) + us);
  }
  const top = [...functions].sort((a, b) => b[1] - a[1]).slice(0, 8)
    .map(([name, us]) => ({ name, usPerEvent: us / events, share: us / busy }));
  const perEvent = Object.fromEntries(Object.entries(kinds).map(([k, us]) => [k, us / events]));
  return { busyUsPerEvent: busy / events, perEvent, top };
}

/** stream-chat for the browser, the way an app would ship it: the same bundle the size table measures. */
const streamChatBundle = () => bundle("export { StreamChat } from 'stream-chat';");

/**
 * Runs `runs` rounds; each round measures every client once (in a rotating order) against the same frames, so the
 * ratios of a round are measured side by side. Returns every measurement and the medians.
 */
export async function run({
  frames = 100_000, users = 10_000, runs = 3, clients = CLIENTS, profileFrames = 0, profileDir, log = console.log,
} = {}) {
  if (clients.includes('ours') && !existsSync(join(ROOT, 'pkg', 'presence_client.js'))) throw new Error('no pkg/: run bash scripts/build-wasm.sh');
  const stream = makeFrames(frames, users);
  const expectedOnline = stream.filter((_, i) => Math.floor(i / users) % 2 === 0).length;
  const server = await startReplayServer(await streamChatBundle());
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  const rounds = [];
  const profiles = {};
  try {
    for (let r = 0; r < runs; r++) {
      const order = clients.map((_, i) => clients[(i + r) % clients.length]);
      const round = {};
      for (const client of order) {
        const { cpuProfile, ...m } = await measure(browser, server, client, stream, expectedOnline);
        round[client] = m;
        log(`run ${r + 1}/${runs} ${client.padEnd(11)} task ${fmt(m.taskUsPerEvent, 1)} µs/event, script ${fmt(m.scriptUsPerEvent, 1)} µs/event, ${fmt(m.eventsPerSec)} events/s, heap ${fmt(m.heapAfter / 1024)} KiB, wasm ${fmt(m.wasmBytes / 1024)} KiB, cache ${m.cachedUsers}`);
      }
      if (round.ours && round['stream-chat']) {
        round.ratioTask = round.ours.taskUsPerEvent / round['stream-chat'].taskUsPerEvent;
        round.ratioScript = round.ours.scriptUsPerEvent / round['stream-chat'].scriptUsPerEvent;
      }
      if (round['ours-batched'] && round['stream-chat']) {
        round.ratioTaskBatched = round['ours-batched'].taskUsPerEvent / round['stream-chat'].taskUsPerEvent;
        round.ratioScriptBatched = round['ours-batched'].scriptUsPerEvent / round['stream-chat'].scriptUsPerEvent;
      }
      if (round['bare-batched'] && round['stream-chat']) {
        round.ratioTaskBareBatched = round['bare-batched'].taskUsPerEvent / round['stream-chat'].taskUsPerEvent;
      }
      rounds.push(round);
    }
    // One more pass under the CDP sampling profiler (which slows the page down: its figures are not the table's).
    if (profileFrames > 0) {
      const sample = makeFrames(profileFrames, users);
      const online = sample.filter((_, i) => Math.floor(i / users) % 2 === 0).length;
      for (const client of clients) {
        const m = await measure(browser, server, client, sample, online, { profile: true });
        profiles[client] = profileSummary(m.cpuProfile, profileFrames);
        if (profileDir) writeFileSync(join(profileDir, `ingest-${client}.cpuprofile`), JSON.stringify(m.cpuProfile));
        log(`profiled ${client}: ${profiles[client].top.slice(0, 3).map((t) => `${t.name} ${fmt(t.usPerEvent, 1)} µs`).join(', ')}`);
      }
    }
  } finally {
    await browser.close();
    await server.close();
  }
  const summary = {};
  for (const client of clients) {
    const pick = (key) => median(rounds.map((round) => round[client][key]));
    summary[client] = {
      taskUsPerEvent: pick('taskUsPerEvent'), scriptUsPerEvent: pick('scriptUsPerEvent'), eventsPerSec: pick('eventsPerSec'),
      heapAfter: pick('heapAfter'), heapBefore: pick('heapBefore'), wasmBytes: pick('wasmBytes'), cachedUsers: pick('cachedUsers'),
    };
  }
  return {
    frames, users, runs, clients, streamChat: pinnedVersion('stream-chat'), rounds, summary, profileFrames, profiles,
    ratioTask: median(rounds.map((round) => round.ratioTask)),
    ratioScript: median(rounds.map((round) => round.ratioScript)),
    ratioTaskBatched: median(rounds.map((round) => round.ratioTaskBatched)),
    ratioScriptBatched: median(rounds.map((round) => round.ratioScriptBatched)),
    ratioTaskBareBatched: median(rounds.map((round) => round.ratioTaskBareBatched)),
  };
}

export function markdown(result) {
  const { summary: s } = result;
  const sc = s['stream-chat'];
  const lines = [
    `${fmt(result.frames)} frames about ${fmt(result.users)} users, median of ${result.runs} run(s); stream-chat ${result.streamChat}.`,
    '',
    '| page | main thread µs/event | script µs/event | events/s (wall) | JS heap after | wasm memory | JS + wasm | × stream-chat main thread | × stream-chat script |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const client of result.clients) {
    const m = s[client];
    const ratio = (key) => (!sc ? '–' : client === 'stream-chat' ? '1.00' : fmt(m[key] / sc[key], 2));
    lines.push(`| ${LABELS[client]} | ${fmt(m.taskUsPerEvent, 1)} | ${fmt(m.scriptUsPerEvent, 1)} | ${fmt(m.eventsPerSec)} | ${fmt(m.heapAfter / 1024)} KiB | ${m.wasmBytes ? `${fmt(m.wasmBytes / 1024)} KiB` : '–'} | ${fmt((m.heapAfter + m.wasmBytes) / 1024)} KiB | ${ratio('taskUsPerEvent')} | ${ratio('scriptUsPerEvent')} |`);
  }
  lines.push('', `Ours / stream-chat, median of the per-run ratios (each run measures both side by side): main thread **${fmt(result.ratioTask, 2)}×** (goal ≤ 0.85), script **${fmt(result.ratioScript, 2)}×** (goal ≤ 0.50).`);
  if (result.ratioTaskBatched) {
    lines.push('', `Ours in batches of 10 (what \`batch_ms=10\` gathers at 1,000 events/s) / stream-chat (one event per message, all it can take): main thread **${fmt(result.ratioTaskBatched, 2)}×** (goal ≤ 0.25), script **${fmt(result.ratioScriptBatched, 2)}×** (goal ≤ 0.50).`);
    if (result.ratioTaskBareBatched) {
      lines.push('', `The floor of that delivery, a bare page taking the same batches: main thread **${fmt(result.ratioTaskBareBatched, 2)}×** stream-chat's.`);
    }
  }
  lines.push('', `Per run (main thread µs/event: ${result.clients.join(' / ')}; ratios ours ÷ stream-chat):`, '');
  result.rounds.forEach((round, i) => {
    lines.push(`- run ${i + 1}: ${result.clients.map((c) => fmt(round[c].taskUsPerEvent, 1)).join(' / ')}; task ${fmt(round.ratioTask, 2)}×, script ${fmt(round.ratioScript, 2)}×`);
  });
  if (Object.keys(result.profiles || {}).length) {
    lines.push('', `Where the time goes: CDP sampling profiler (100 µs), one extra pass of ${fmt(result.profileFrames)} frames per page (profiling slows`,
      'the page; these are shares, not the figures above). Self time per event by kind, then the heaviest functions:', '');
    lines.push('| page | profiled µs/event | wasm | wasm↔JS calls | JS | GC | engine (`(program)`: native work outside JS) |', '|---|---:|---:|---:|---:|---:|---:|');
    for (const [client, p] of Object.entries(result.profiles)) {
      lines.push(`| ${LABELS[client]} | ${fmt(p.busyUsPerEvent, 1)} | ${fmt(p.perEvent.wasm, 1)} | ${fmt(p.perEvent.boundary, 1)} | ${fmt(p.perEvent.js, 1)} | ${fmt(p.perEvent.gc, 1)} | ${fmt(p.perEvent.engine, 1)} |`);
    }
    for (const [client, p] of Object.entries(result.profiles)) {
      lines.push('', `${LABELS[client]}: ${p.top.map((t) => `\`${t.name}\` ${fmt(t.usPerEvent, 1)} µs (${fmt(t.share * 100)} %)`).join(', ')}.`);
    }
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const args = parseArgs();
  const clients = args.clients ? String(args.clients).split(',') : CLIENTS;
  const unknown = clients.filter((c) => !CLIENTS.includes(c));
  if (unknown.length) throw new Error(`unknown client(s) ${unknown.join(', ')}; known: ${CLIENTS.join(', ')}`);
  const result = await run({
    frames: args.frames ?? 100_000, users: args.users ?? 10_000, runs: args.runs ?? 3, clients,
    profileFrames: args.profile === true ? 20_000 : Number(args.profile || 0), profileDir: args.profileDir,
  });
  console.log(`\n${markdown(result)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
}
