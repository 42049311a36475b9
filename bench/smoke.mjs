// A short run of every load-generator command against a real server, so the benchmark tools cannot rot: a few
// hundred connections for a few seconds, then the cluster benchmark on three nodes and a private redis-server. It
// asserts what the tools report (every watcher got every flip, probes were answered, queries ran, every client came
// back after the restart, the churn observers converged, the killed node's user went offline), never how fast. Part of the test suite (scripts/test.sh), on the debug builds:
//   PRESENCE_SERVER_BIN=target/debug/presence-server PRESENCE_LOADGEN_BIN=target/debug/presence-loadgen node bench/smoke.mjs
import assert from 'node:assert/strict';
import * as fanout from './fanout.mjs';
import { fmt } from './lib.mjs';
import * as queryload from './queryload.mjs';
import * as restart from './restart.mjs';
import * as churn from './churn.mjs';
import * as cluster from './cluster.mjs';

const quiet = () => {};
const spread = await fanout.run({ watchers: [200], flips: 2, rounds: 1, connections: 200, log: quiet });
const [row] = spread.fanout;
assert.equal(row.ours.delivery_us.count, 200 * 2, 'every watcher receives every flip from presence-server');
assert.equal(row.limit.delivery_us.count, 200 * 2, 'every watcher receives every frame from the broadcast baseline');
assert.equal(spread.capacity.connections, 200);
assert.ok(spread.capacity.rss_after > 0, 'the server RSS is read');

const load = await queryload.run({ users: 300, channels: 30, probes: 5, loopers: 2, secs: 3, log: quiet });
const [q] = load.rows;
assert.ok(q.result.health_check_ms.count >= 5, `the probes' health checks are answered: ${JSON.stringify(q.result)}`);
assert.equal(q.result.probes_closed, 0, 'no probe is closed by the server');
assert.ok(q.result.query_ms_by_kind.users_unpinned.count > 0, 'unpinned user queries ran');
assert.ok(q.result.query_ms_by_kind.channels_unpinned.count > 0, 'channel queries ran');
assert.ok(q.result.query_ms_by_kind.users_pinned.count > 0, 'pinned user queries ran');

const crash = await restart.run({ clients: 40, observers: 2, downs: [500], unpaced: false, log: quiet });
const [{ result: back }] = crash.rows;
assert.ok(back.all_back, `every client reconnects by itself after the restart: ${JSON.stringify(back)}`);
assert.equal(back.back, 40);
assert.ok(back.observers_converged, `the observers see the visible clients online, the invisible offline: ${JSON.stringify(back)}`);
assert.ok(back.persisted_checked > 0, 'some clients changed their status or invisibility before the crash');
assert.equal(back.persisted_lost, 0, `what was acknowledged before the crash reads back: ${JSON.stringify(back.lost_examples)}`);
assert.equal(back.reconnects_per_sec.reduce((a, b) => a + b, 0), 40, 'the histogram counts every reconnect');

const soak = await churn.run({ clients: 40, observers: 5, secs: 3, meanPauseMs: 300, rounds: 2, log: quiet });
const c = soak.result;
assert.ok(c.actions.connects > 0 && c.actions.invisible_on > 0, `the clients churned: ${JSON.stringify(c.actions)}`);
assert.ok(c.presence_events > 0, 'the observers received presence events');
assert.ok(c.after_churn.converged, `every observer's view equals the server's truth after the churn: ${JSON.stringify(c)}`);
assert.ok(c.after_leave.converged, `every observer's view equals the server's truth after everyone left: ${JSON.stringify(c)}`);
assert.equal(c.after_leave.online_in_truth, 0, 'nobody is online after every client left');
assert.equal(c.out_of_order, 0, `no event about a user arrives out of order: ${JSON.stringify(c.event_problems)}`);
assert.equal(c.repeated_flips, 0, `presence flips alternate: ${JSON.stringify(c.event_problems)}`);
assert.equal(c.rounds.length, 2, 'both churn rounds ran');
assert.ok(c.rounds.every((r) => r.after_churn.converged && r.after_leave.converged), 'every round converged');
assert.ok(c.rss_after > 0 && c.rss_peak >= c.rss_before, 'the server RSS is read');

const three = await cluster.run({ watchers: [60], flips: 2, deaths: 1, connections: 100, users: 100, querySecs: 2, log: quiet });
const [spreadRow] = three.fanout;
assert.equal(spreadRow.cluster.servers, 3, 'the watchers are spread over the three nodes');
assert.equal(spreadRow.cluster.delivery_us.count, 60 * 2, 'every watcher on every node receives every flip');
assert.equal(spreadRow.single.delivery_us.count, 60 * 2, 'every watcher on the single node receives every flip');
assert.equal(three.death.samples.length, 1, 'the killed node\'s user is seen offline from another node');
assert.equal(three.capacity.cluster.total, 300, 'three load generators hold their connections at once');
assert.ok(three.capacity.cluster.rssAfter.every((b) => b > 0), 'every node\'s RSS is read');
assert.ok(three.query.cluster.count > 0 && three.query.single.count > 0, 'pinned queries ran on both');

console.log(`load generator smoke: fan-out to 200 watchers, 200 idle connections, ${q.result.queries} queries under load, 40 clients through a restart, ${fmt(c.events)} churn events, a 3-node cluster (fan-out, a node death, idle connections, queries) — ok`);
process.exit(0);
