// A short run of every load-generator command against a real server, so the benchmark tools cannot rot: a few
// hundred connections for a few seconds. It asserts what the tools report (every watcher got every flip, probes
// were answered, queries ran), never how fast. Part of the test suite (scripts/test.sh), on the debug builds:
//   PRESENCE_SERVER_BIN=target/debug/presence-server PRESENCE_LOADGEN_BIN=target/debug/presence-loadgen node bench/smoke.mjs
import assert from 'node:assert/strict';
import * as fanout from './fanout.mjs';
import * as queryload from './queryload.mjs';

const quiet = () => {};
const spread = await fanout.run({ watchers: [200], flips: 2, connections: 200, log: quiet });
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
console.log(`load generator smoke: fan-out to 200 watchers, 200 idle connections, ${q.result.queries} queries under load — ok`);
process.exit(0);
