// `npm run bench`: builds what the benchmarks need, runs them, and writes BENCHMARKS.md (every table with the
// commit it measured and the command that reproduces it; raw figures in artifacts/bench/*.json).
// Usage: npm run bench [-- --quick] [-- --no-build]
//        [-- --only bundle,ingest,detection,fanout,queryload,restart,churn,storage,cluster,webhooks,ceiling,storm] [-- --whole]
//        [-- --out FILE] [-- --note "text"]
//   --only      run these benchmarks only; an existing output file keeps its other sections and gets these
//               replaced in place, each naming its own commit, date and load (--whole: write a new file instead).
//   --quick     20,000 ingest frames instead of 100,000, 10 silent deaths instead of 50, fan-out to 1,000 watchers
//               only, 2,000 idle connections instead of 15,000, queries under load over 5,000 users and 500 channels
//               for 10 s instead of 100,000 / 10,000 for 30 s, 700 clients through one restart instead of 1,000 through two,
//               300 churning clients for 15 s instead of 2,000 for 60 s, 200 users pinging for one simulated hour
//               instead of 1,000 for two, cluster fan-out to 1,000 watchers with 2 node deaths and 3 × 2,000
//               connections instead of 1,000 and 5,000 watchers, 5 deaths and 3 × 10,000, the cluster ceiling over
//               30,000 users and 1 run of its Redis phases instead of 100,000 and 3, and one storm round of 300
//               users × 1,000 watchers instead of five each of 1,000, 300 and 50 users × 1,000 (under 7 minutes once
//               built); the full run takes about 30–35 minutes.
//   --no-build  use the existing pkg/, target/release/presence-server and target/release/examples/ceiling.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import * as bundle from './bundle.mjs';
import * as detection from './detection.mjs';
import * as fanout from './fanout.mjs';
import * as ingest from './ingest.mjs';
import * as queryload from './queryload.mjs';
import * as restart from './restart.mjs';
import * as churn from './churn.mjs';
import * as storage from './storage.mjs';
import * as cluster from './cluster.mjs';
import * as webhooks from './webhooks.mjs';
import * as ceiling from './ceiling.mjs';
import * as storm from './storm.mjs';
import { updateSections } from './sections.mjs';
import { ROOT, buildCeiling, buildServer, buildServerAndLoadgen, buildWasm, commitInfo, fmt, machineInfo, parseArgs } from './lib.mjs';

const args = parseArgs();
const quick = Boolean(args.quick);
const only = new Set(String(args.only || 'bundle,ingest,detection,fanout,queryload,restart,churn,storage,cluster,webhooks,ceiling,storm').split(','));
const outFile = resolve(ROOT, typeof args.out === 'string' ? args.out : 'BENCHMARKS.md');
// `--only` on an existing file re-measures those benchmarks and updates their sections in place; `--whole`
// writes a new file holding only them.
const update = Boolean(args.only) && !args.whole && existsSync(outFile);
const artifacts = join(ROOT, 'artifacts', 'bench');
mkdirSync(artifacts, { recursive: true });

const plan = quick
  ? {
    ingest: { frames: 20_000, users: 10_000, runs: 3, profileFrames: 10_000 },
    detection: { gracefulRuns: 100, silentRuns: 10 },
    fanout: { watchers: [1000], flips: 5, rounds: 1, connections: 2000 },
    queryload: { users: 5_000, channels: 500, probes: 20, loopers: 8, secs: 10 },
    // The smallest crowd the server paces (above 50 connects a second over its 12 s window), one outage.
    restart: { clients: 700, observers: 3, downs: [0], unpaced: false },
    churn: { clients: 300, observers: 50, secs: 15, meanPauseMs: 3_000, rounds: 2 },
    storage: { users: 200, scale: 200, hours: 1 },
    cluster: cluster.QUICK,
    webhooks: { users: 300, rounds: 5, outageSecs: 10, watchers: 1000, flips: 5, fanoutRounds: 1 },
    ceiling: ceiling.QUICK,
    storm: storm.QUICK,
  }
  : {
    ingest: { frames: 100_000, users: 10_000, runs: 3, profileFrames: 20_000 },
    detection: { gracefulRuns: 100, silentRuns: 50 },
    fanout: { watchers: [1000, 10000], flips: 30, rounds: 3, connections: 15000 },
    queryload: { users: 100_000, channels: 10_000, probes: 50, loopers: 8, secs: 30 },
    restart: { clients: 1000, observers: 5, downs: [0, 10_000] },
    churn: { clients: 2000, observers: 200, secs: 60, meanPauseMs: 10_000, rounds: 2 },
    storage: { users: 1000, scale: 100, hours: 2 },
    cluster: cluster.FULL,
    webhooks: { users: 1000, rounds: 20, outageSecs: 600, watchers: 1000, flips: 30, fanoutRounds: 3 },
    ceiling: ceiling.FULL,
    storm: storm.FULL,
  };
const loadgenSteps = ['fanout', 'queryload', 'restart', 'churn', 'cluster', 'webhooks', 'storm'];

const started = Date.now();
const step = (text) => console.log(`\n==> ${text} (${fmt((Date.now() - started) / 1000)} s)`);
const loadBefore = loadavg()[0];
const commit = commitInfo();

if (!args.noBuild) {
  if (loadgenSteps.some((s) => only.has(s))) {
    step('building presence-server and presence-loadgen (release)');
    buildServerAndLoadgen();
  } else if (only.has('detection') || only.has('storage')) {
    step('building presence-server (release)');
    buildServer();
  }
  if (only.has('ceiling')) {
    step('building the ceiling benchmark (release example of presence-server)');
    buildCeiling();
  }
  if (only.has('bundle') || only.has('ingest')) {
    step('building the wasm package');
    buildWasm();
  }
}

const sections = [];
const goals = [];
const save = (name, result) => writeFileSync(join(artifacts, `${name}.json`), JSON.stringify(result, null, 2));

if (only.has('bundle')) {
  step('bundle size');
  const result = await bundle.run();
  save('bundle', result);
  console.log(bundle.markdown(result));
  const ours = result.rows[0];
  const sc = result.rows.find((r) => r.name === 'stream-chat');
  goals.push(`Bundle ≤ 59 KiB (wasm + glue, gzip -9): ${fmt(ours.totalGz)} B = ${fmt(ours.totalGz / 1024, 1)} KiB, ${fmt(ours.totalGz / sc.totalGz, 2)}× stream-chat — ${ours.totalGz <= 59 * 1024 ? 'met' : '**missed**'}.`);
  sections.push([
    '## 1. Bundle size',
    '',
    'Each library: an entry that imports its client class, bundled with esbuild (`--bundle --minify --format=esm`,',
    'platform browser), then `gzip -9`. Ours: the package\'s glue (`pkg/presence_client.js`) bundled the same way, plus',
    'the `.wasm` it fetches, each gzip -9, summed. Versions are the pinned devDependencies.',
    '',
    bundle.markdown(result),
    '',
    'Reproduce: `bash scripts/build-wasm.sh && node bench/bundle.mjs`',
  ].join('\n'));
}

if (only.has('ingest')) {
  const p = plan.ingest;
  step(`event ingest in Chromium (${fmt(p.frames)} frames, ${p.runs} runs)`);
  const result = await ingest.run({ ...p, profileDir: artifacts });
  save('ingest', result);
  goals.push(`Ingest main thread ≤ 0.85× stream-chat: ${fmt(result.ratioTask, 2)}× — ${result.ratioTask <= 0.85 ? 'met' : '**missed**'}.`);
  if (result.ratioTaskBatched) {
    goals.push(`Ingest in batches of 10 ≤ 0.25× stream-chat's main thread and ≤ 0.5× its script: ${fmt(result.ratioTaskBatched, 2)}× and ${fmt(result.ratioScriptBatched, 2)}× — ${result.ratioTaskBatched <= 0.25 && result.ratioScriptBatched <= 0.5 ? 'met' : '**missed**'}.`);
  }
  goals.push(`Ingest script ≤ 0.5× stream-chat: ${fmt(result.ratioScript, 2)}× (${fmt(result.summary.ours.scriptUsPerEvent, 1)} vs ${fmt(result.summary['stream-chat'].scriptUsPerEvent, 1)} µs/event) — ${result.ratioScript <= 0.5 ? 'met' : '**missed**'}.`);
  sections.push([
    '## 2. Event ingest in headless Chromium',
    '',
    `${fmt(p.frames)} \`user.presence.changed\` frames (${fmt(p.users)} distinct users, each round flipping \`online\`)`,
    'replayed by a local Node `ws` server into one page per client, after the handshake each client needs. Every page',
    'has one listener reading `event.user.online` and a user cache (the SDKs\' own `client.state.users`; a `Map` on the',
    'bare page). Main thread and script time: CDP `Performance.getMetrics` `TaskDuration` / `ScriptDuration` before',
    'and after the stream, divided by the frames; events/s from the first to the last event inside the page; JS heap',
    'from `Runtime.getHeapUsage` after a forced GC with the cache full; wasm memory is the module\'s linear memory.',
    '',
    ingest.markdown(result),
    '',
    'The profiles themselves: `artifacts/bench/ingest-*.cpuprofile` (Chrome DevTools, Performance panel).',
    '',
    `Reproduce: \`bash scripts/build-wasm.sh && node bench/ingest.mjs --frames ${p.frames} --runs ${p.runs} --profile ${p.profileFrames}\``
  ].join('\n'));
}

if (only.has('detection')) {
  const p = plan.detection;
  step(`detection (${p.gracefulRuns} graceful runs, ${p.silentRuns} silent deaths)`);
  const result = await detection.run(p);
  save('detection', result);
  goals.push(`Graceful disconnect seen offline, p95 ≤ 1 s: ${fmt(result.graceful.p95, 1)} ms — ${result.graceful.p95 <= 1000 ? 'met' : '**missed**'}.`);
  goals.push(`Silent death seen offline ≤ 20 s: max ${fmt(result.silent.max / 1000, 1)} s (p50 ${fmt(result.silent.p50 / 1000, 1)} s) — ${result.silent.max <= 20000 ? 'met' : '**missed**'}.`);
  sections.push([
    '## 5. Detection',
    '',
    'A peer follows the leaving users (`queryUsers` with `presence: true`) and timestamps their `user.presence.changed`',
    '`online: false`. Graceful: the client closes with 1000, as `disconnectUser()` does, then reconnects for the next run.',
    'Silent death: each client connects through a local TCP proxy that, at a random moment within one ping interval,',
    'stops forwarding both ways without closing anything; the server finds out only from its missing pongs.',
    '',
    detection.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server && node bench/detection.mjs --graceful-runs ${p.gracefulRuns} --silent-runs ${p.silentRuns}\``,
  ].join('\n'));
}

if (only.has('fanout')) {
  const p = plan.fanout;
  step(`fan-out (${p.watchers.join(', ')} watchers) and capacity (${fmt(p.connections)} connections)`);
  const result = await fanout.run({ ...p, profileDir: artifacts });
  save('fanout', result);
  for (const row of result.fanout) {
    goals.push(`Fan-out to ${fmt(row.watchers)} watchers ≤ 1.2× the broadcast limit (last watcher, p50): ${fmt(row.ratioLast, 2)}× (${fmt(row.ours.last_watcher_us.p50 / 1000, 1)} ms vs ${fmt(row.limit.last_watcher_us.p50 / 1000, 1)} ms; median of ${row.ratios.length} round(s): ${row.ratios.map((x) => fmt(x, 2)).join(' / ')}) — ${row.ratioLast <= 1.2 ? 'met' : '**missed**'}.`);
  }
  goals.push(`Idle connection ≤ 8 KiB RSS: ${fmt(result.capacity.rss_per_connection / 1024, 1)} KiB over ${fmt(result.capacity.connections)} connections — ${result.capacity.rss_per_connection <= 8192 ? 'met' : '**missed**'}.`);
  const cmd = `cargo build --release -p presence-server -p presence-loadgen && node bench/fanout.mjs --watchers ${p.watchers.join(',')} --flips ${p.flips} --rounds ${p.rounds} --connections ${p.connections} --profile artifacts/bench`;
  sections.push([
    '## 3. Fan-out latency',
    '',
    'The Rust load generator (bench/loadgen) opens the watchers on loopback, each bound to a source address of its',
    'own range (127.0.0.2, ...), each following one user with `queryUsers(..., { presence: true })`. The user flips',
    '(`invisible` on, off, ... by `PATCH /users`); every watcher timestamps the `user.presence.changed` against the',
    'moment the request was sent, so the figure includes the REST call. The limit: the same watchers against a minimal',
    'tokio-tungstenite broadcast server (4 KiB read buffer, one encoded frame shared by all), sent a frame of the same',
    'shape over a WebSocket.',
    '',
    fanout.markdownFanout(result),
    '',
    `Reproduce: \`${cmd}\``,
  ].join('\n'));
  sections.push([
    '## 4. Capacity',
    '',
    'Idle authenticated connections (distinct users, each read so that it answers pings), opened 128 at a time; the',
    'server\'s RSS (`/proc/PID/status` VmRSS) before and 6 s after, divided by the connections.',
    '',
    fanout.markdownCapacity(result),
    '',
    `Reproduce: \`${cmd}\``,
  ].join('\n'));
}

if (only.has('queryload')) {
  const p = plan.queryload;
  step(`queries under load (${fmt(p.users)} users, ${fmt(p.channels)} channels, ${p.loopers} loopers, ${p.secs} s)`);
  const result = await queryload.run(p);
  save('queryload', result);
  const r = result.rows[0].result;
  goals.push(`Queries under load: another user's health.check p99 < 100 ms and no 4002: p99 ${fmt(r.health_check_ms.p99, 1)} ms, ${r.closed_4002} closed with 4002 — ${r.health_check_ms.p99 < 100 && r.closed_4002 === 0 ? 'met' : '**missed**'}.`);
  sections.push([
    '## 6. Queries under load',
    '',
    'A fresh server (in-memory SQLite) is seeded through the REST API with users (custom fields of mixed types, a',
    'status line) and `messaging` channels of five members. Probe connections of other users send a `health.check`',
    'every second and time the reply; meanwhile the loopers (server token) run unpinned queries back to back:',
    '`queryUsers` with a range filter on a custom number, sorted on a custom field whose values mix numbers, strings,',
    'booleans and null, and `queryChannels` over every `messaging` channel sorted on a custom field; one more client',
    'loops pinned `queryUsers` (`id $in` of 30 ids, the usual presence query).',
    '',
    queryload.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server -p presence-loadgen && node bench/queryload.mjs --users ${p.users} --channels ${p.channels} --probes ${p.probes} --loopers ${p.loopers} --secs ${p.secs}\``,
  ].join('\n'));
}

const faults = [];
if (only.has('restart')) {
  const p = plan.restart;
  step(`restart (${fmt(p.clients)} clients, ${p.observers} observers, outages ${p.downs.map((d) => `${d / 1000} s`).join(', ')})`);
  const result = await restart.run(p);
  save('restart', result);
  for (const { downMs, result: r } of result.rows.filter((row) => row.paced)) {
    goals.push(`Restart after ${fmt(downMs / 1000, 0)} s down, ${fmt(r.clients)} clients: ${r.back} back by themselves within ${fmt(r.all_back_ms / 1000, 1)} s, observers ${r.observers_converged ? 'converged' : '**not converged**'}, ${r.persisted_lost} persisted changes lost — ${restart.verdict(r) ? 'met' : '**missed**'}; largest one-second bucket of reconnects ≤ 10 % of clients: ${fmt(100 * r.largest_second_share, 1)} % — ${r.largest_second_share <= 0.1 ? 'met' : '**missed**'}.`);
  }
  faults.push([
    '### kill -9 and restart',
    '',
    'The load generator starts the release server on a file database (a free loopback port chosen up front), connects',
    'the clients (Rust, one user each) and the observers, which follow every client with `queryUsers(..., { presence:',
    'true })`, 100 ids per query. Every fifth client goes invisible and every third gets a `status`, by partial update;',
    'once every observer shows the visible clients online and the invisible ones offline, the server is killed with',
    'SIGKILL and started again on the same database and address, at once or after an outage. Each client reconnects',
    'by itself with the client\'s backoff (after n consecutive failures a uniform delay between 250 ms and',
    'min(25 s, 2.5 s · 2^n)); observers reconnect the same way and follow everyone again. Checked: every client back,',
    'the observers converged, and each client\'s own `me` at its reconnect (and the server\'s view of its `status`)',
    'equal to what the server acknowledged before the crash.',
    '',
    restart.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server -p presence-loadgen && node bench/restart.mjs --clients ${p.clients} --observers ${p.observers} --down-ms ${p.downs.join(',')}\``,
  ].join('\n'));
}
if (only.has('churn')) {
  const p = plan.churn;
  step(`churn (${fmt(p.clients)} clients, ${p.observers} observers, ${p.secs} s)`);
  const result = await churn.run(p);
  save('churn', result);
  const r = result.result;
  goals.push(`Churn, ${fmt(r.clients)} clients and ${r.observers} observers for ${r.secs} s: every view equals the server's truth, no event out of order — ${churn.verdict(r) ? 'met' : '**missed**'} (${r.after_churn.differences} + ${r.after_leave.differences} differences, ${r.out_of_order} out of order, ${r.repeated_flips} repeated flips); server RSS back near its baseline: ${fmt(r.rss_before / 1048576, 1)} MiB before, ${fmt(r.rss_peak / 1048576, 1)} MiB peak, ${r.rounds.map((x) => fmt(x.rss_after / 1048576, 1)).join(' / ')} MiB after each round.`);
  faults.push([
    '### Churn soak',
    '',
    'A fresh server (in-memory SQLite, offline grace 3 s). The clients\' users are created first; the observers follow',
    'all of them (100 ids per query). Then each client, after a random pause, acts at random: connects, closes with',
    '1000, drops its TCP connection without a close frame (the server ends it as abnormal: grace window), or turns',
    '`invisible` on or off by partial update. After the churn and a settle time longer than the grace window, each',
    'observer\'s view (its query results, then every `user.presence.changed` / `user.updated` in arrival order) is',
    'compared with the server\'s truth (a query with a server token); every client then leaves and the views are',
    'compared again. Events about a user must arrive in `created_at` order and each `user.presence.changed` must flip',
    'the previous state. Two rounds run on the same server, each ending with every client gone. RSS: the baseline with',
    'the observers connected and no client, the peak sampled every 200 ms, and after each round.',
    '',
    churn.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server -p presence-loadgen && node bench/churn.mjs --clients ${p.clients} --observers ${p.observers} --secs ${p.secs} --mean-pause-ms ${p.meanPauseMs} --rounds ${p.rounds}\``,
  ].join('\n'));
}
if (only.has('storage')) {
  const p = plan.storage;
  step(`storage write load (${fmt(p.users)} users, ${p.hours} simulated hour(s) at a time scale of ${p.scale})`);
  const result = await storage.run(p);
  save('storage', result);
  const [before, now] = result.rows;
  goals.push(`Storage writes per connected user-hour ≤ 4 (plus connects and disconnects): ${fmt(now.writesPerUserHour, 2)} (every ping written: ${fmt(before.writesPerUserHour, 1)}); ${fmt(now.connectWrites / now.users, 2)} per connect, ${fmt(now.disconnectWrites / now.users, 2)} per disconnect — ${result.goalMet ? 'met' : '**missed**'}.`);
  sections.push([
    '## 8. Storage write load',
    '',
    'Connected users doing nothing but the client\'s keep-alive `health.check` (every 25 s), on a time scale: pings',
    'and the server\'s `last_active` refresh interval (`--last-active-refresh-ms`, default 15 min) both shortened by',
    'the scale, so one simulated hour takes 3,600 s ÷ scale. The server runs on a SQLite file; the writes are its',
    '`presence_store_writes_total` counter (rows written; `presence_store_commits_total`: transactions, one fsync',
    'each) on the admin address, read once every user is connected and at the end of the window, before anyone',
    'leaves; connects and disconnects (close 1000) are counted apart. "Every ping written" is the same binary with',
    '`--last-active-refresh-ms 0`, what the server did before the refresh interval: each ping refreshes `last_active`',
    'in memory for everyone either way.',
    '',
    storage.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server && node bench/storage.mjs --users ${p.users} --scale ${p.scale} --hours ${p.hours}\``,
  ].join('\n'));
}
if (only.has('cluster')) {
  const p = plan.cluster;
  step(`cluster mode (3 nodes on one Redis: fan-out to ${p.watchers.map((n) => fmt(n)).join(', ')}, ${p.deaths} node deaths, ${fmt(p.connections)} connections per node, pinned queries)`);
  const result = await cluster.run(p);
  save('cluster', result);
  sections.push([
    '## 9. Cluster mode',
    '',
    'The release server three times on one private `redis-server` (free loopback port, no persistence), each node on',
    'its own SQLite file in a temporary folder (`--redis-url`, `--node-id node0..node2`), against one node alone',
    '(SQLite file, no Redis), in the same run; the Rust load generator drives the watchers and connections.',
    '',
    cluster.markdown(result),
    '',
    `Reproduce: \`${cluster.command(p)}\``,
  ].join('\n'));
}
if (only.has('webhooks')) {
  const p = plan.webhooks;
  step(`webhooks (${fmt(p.users)} users, ${p.rounds} status rounds, a ${fmt(p.outageSecs)} s receiver outage, fan-out to ${fmt(p.watchers)} with webhooks on and off)`);
  const result = await webhooks.run(p);
  save('webhooks', result);
  goals.push(`Webhooks ≥ 1,000 events/s to one local receiver: ${fmt(result.throughput.perSecond)} events/s — ${result.throughput.perSecond >= 1000 ? 'met' : '**missed**'}; fan-out with webhooks on ≤ 1.05× off: ${fmt(result.fanout.ratio, 2)}× — ${result.fanout.ratio <= 1.05 ? 'met' : '**missed**'}.`);
  sections.push([
    '## 10. Webhooks',
    '',
    'The release server on a SQLite file sends every presence and profile change to a receiver in the benchmark\'s',
    'own process (Node `http`, answering 200). Each event is timestamped on arrival; its delay is from the change',
    '(the event\'s `created_at`) to the arrival. The outage stops the receiver while every user changes status three',
    'times; once it listens again, the time until the last event arrived and whether each user\'s events came in',
    'order. The fan-out row is the fan-out benchmark\'s measure on a server with `--webhook-url` and on one without,',
    'alternated; the median of the rounds\' ratios.',
    '',
    webhooks.markdown(result),
    '',
    `Reproduce: \`cargo build --release -p presence-server -p presence-loadgen && node bench/webhooks.mjs --users ${p.users} --rounds ${p.rounds} --outage-secs ${p.outageSecs} --watchers ${p.watchers} --flips ${p.flips} --fanout-rounds ${p.fanoutRounds}\``,
  ].join('\n'));
}
if (only.has('ceiling')) {
  const p = plan.ceiling;
  step(`cluster ceiling (apply rate over ${fmt(p.users)} users, Redis appends and reads, ${p.fanOutReaders.join(', ')} readers)`);
  const result = await ceiling.run(p);
  save('ceiling', result);
  sections.push([
    '## 11. Cluster ceiling',
    '',
    'Every node applies every entry of the cluster log, so one node\'s hub thread bounds the log\'s rate however many',
    'nodes there are, and Redis\'s one core serves every entry to every node. Measured with the release build of the',
    'server\'s own code paths (server/examples/ceiling: the log\'s `encode`, `decode`, `append` and `read`, the',
    '`Driver`) and one private `redis-server` (free loopback port, no persistence).',
    '',
    ceiling.markdown(result),
    '',
    `Reproduce: \`${ceiling.command(p)}\``,
  ].join('\n'));
}
if (only.has('storm')) {
  const p = plan.storm;
  step(`presence storm (${p.sizes.map((x) => `${fmt(x.users)} users × ${fmt(x.watchers)} watchers`).join(', ')}; batch_ms=${p.batchMs} and one event per frame, ${p.rounds} round(s))`);
  const result = await storm.run(p);
  save('storm', result);
  for (const s of result.sizes) {
    goals.push(`Storm, ${fmt(s.users)} users × ${fmt(s.watchers)} watchers: the last watcher's delay with \`batch_ms=${result.batchMs}\` ≤ one event per frame + ${result.batchMs} ms (p50 over the flips, median of ${s.rounds.length} round(s)): ${fmt(s.batched.lastP50 / 1000, 1)} ms vs ${fmt(s.unbatched.lastP50 / 1000, 1)} ms — ${s.goalMet ? 'met' : '**missed**'}; server CPU per event batched ÷ unbatched ${fmt(s.ratios.cpuPerEvent, 2)}×.`);
  }
  sections.push([
    '## 12. Presence storm: batched delivery',
    '',
    'Many users flip within one second while every watcher follows all of them: the Rust load generator',
    '(`presence-loadgen storm`) connects U users (so that they are online) and W watchers, each of which follows all U',
    'users with `queryUsers(..., { presence: true })`, 100 ids a query (a page holds at most 100 users); then each user',
    'turns `invisible` on by its own `PATCH /users` with a server token, the requests spread evenly over the second,',
    'and each watcher timestamps every frame as it comes off its socket. The watchers connect with `batch_ms=N`, every',
    'frame after the first an array of the events of an N ms window, or without it, one event per frame; each user',
    'flips once, so no event is coalesced away and both deliver U × W events. A fresh server (in-memory database)',
    'serves each run. The load generator runs on the same 2 cores as the server: a storm larger than the machine carries',
    'in its second backs up, and its delays are then those of the backlog (hundreds of milliseconds, seconds).',
    '',
    storm.markdown(result),
    '',
    `Reproduce: \`${storm.command(p)}\``,
  ].join('\n'));
}
const faultsSection = faults.length ? ['## 7. Faults and churn', '', ...faults.flatMap((f) => [f, ''])].join('\n').trimEnd() : null;

const loadAfter = loadavg()[0];
const machine = machineInfo();
const cores = cpus().length;
// Judged on the load at the start: the end figure includes the benchmarks' own load (the cluster step runs four
// processes and a load generator).
const loaded = loadBefore > cores * 0.5;
const note = typeof args.note === 'string' ? args.note : '';
const date = new Date(started).toISOString().replace(/\.\d+Z$/, 'Z');
if (update) {
  // Only the sections re-measured change; each names its own commit, date and load.
  const stamp = `_Measured separately (\`npm run bench -- --only ${[...only].join(',')}${quick ? ' --quick' : ''}\`): commit \`${commit.commit}\`${commit.dirty ? ' (with uncommitted changes)' : ''} — ${commit.subject}; ${date}; mode: ${quick ? 'quick' : 'full'}; 1-minute load average ${loadBefore.toFixed(2)} at the start, ${loadAfter.toFixed(2)} at the end${loaded ? ' (**loaded machine**: compare the ratios)' : ''}${note ? `; note: ${note}` : ''}._`;
  const subs = new Map(faultsSection ? [[7, { section: faultsSection, blocks: faults }]] : []);
  const doc = updateSections(readFileSync(outFile, 'utf8'), {
    sections, subs, stamp, goals,
    headerNote: '- Some sections were measured again later (`npm run bench -- --only NAME`): those name their own commit, date and machine load, which can differ from the above.',
  });
  writeFileSync(outFile, doc);
  step(`updated ${[...only].join(', ')} in ${outFile}`);
  process.exit(0);
}
if (faultsSection) sections.push(faultsSection);
const doc = [
  '# Benchmarks',
  '',
  `Written by \`npm run bench${quick ? ' -- --quick' : ''}\` (bench/run.mjs; what each benchmark does: bench/README.md).`,
  '',
  `- Commit measured: \`${commit.commit}\`${commit.dirty ? ' (with uncommitted changes)' : ''} — ${commit.subject}`,
  `- Date: ${date}; mode: ${quick ? 'quick' : 'full'}; took ${fmt((Date.now() - started) / 60000, 1)} min including builds`,
  `- Machine: ${machine.cpu}; Node ${machine.node}; ${machine.chromium}; 1-minute load average ${loadBefore.toFixed(2)} at the start, ${loadAfter.toFixed(2)} at the end (which includes the benchmarks' own load)`,
  ...(loaded ? [`- **Measured on a shared, loaded machine** (load average above half the ${cores} cores): absolute figures are noisy;`,
    '  the ratios, measured side by side in each run, are the figures to compare.'] : []),
  ...(quick ? ['- Quick mode: small samples (20,000 ingest frames, 10 silent deaths, 5 flips to 1,000 watchers, 2,000 idle',
    '  connections, 700 clients through one restart, 300 churning clients for 15 s, 200 users pinging for one simulated',
    '  hour, 1,000 watchers, 2 node deaths and 3 × 2,000 connections on the cluster); `npm run bench` without `--quick`',
    '  is the run that settles a goal.'] : []),
  ...(note ? [`- Note: ${note}`] : []),
  '',
  '## Goals',
  '',
  ...goals.map((g) => `- ${g}`),
  '',
  sections.sort((a, b) => parseInt(a.slice(3), 10) - parseInt(b.slice(3), 10)).join('\n\n'),
  '',
].join('\n');
writeFileSync(outFile, doc);
step(`wrote ${outFile}`);
process.exit(0);
