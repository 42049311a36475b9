//! Several nodes on one shared log, in memory with a manual clock: each node is a driver with its own store,
//! reading the same entries in the same order, as cluster nodes read the Redis stream. What a cluster promises —
//! the same state everywhere, a dead node's connections ended on every node (and its sockets closed where it is
//! only cut off), grace windows ended by a backup when the primary is gone, a restarted node ending what its
//! predecessor left, a node joining or catching up after a pause — is checked here in milliseconds, without Redis;
//! the Redis tests keep what needs Redis (the stream, heartbeats, outages).

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::close_code;
use serde_json::Value;

use super::driver::{Driver, Input, StoreState, TIMEOUT_BACKUP};
use super::log::{Author, Entry, LogPos};
use super::testkit::*;
use crate::model::Caller;
use crate::presence::command::{conn_prefix, Command, FollowUsers, NodeDown};
use crate::presence::{Ending, Engine, SocketOrder};

/// One node: its driver and store, how far it has read the log, and what reached the sockets it holds.
struct Node {
    author: Author,
    driver: Driver,
    store: FakeStore,
    read: usize,
    next_seq: u64,
    /// Reading and appending (a crashed node does neither).
    alive: bool,
    /// (connection, frame) handed to the connections this node holds, in order.
    frames: Vec<(String, Value)>,
    orders: Vec<SocketOrder>,
}

struct LoggedEntry {
    origin: String,
    seq: u64,
    at: DateTime<Utc>,
    command: Command,
}

struct Cluster {
    log: Vec<LoggedEntry>,
    nodes: Vec<Node>,
    clock: ManualClock,
}

impl Cluster {
    fn new(ids: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            log: Vec::new(),
            nodes: Vec::new(),
            clock: ManualClock::new(),
        };
        for id in ids {
            cluster.start(id);
        }
        cluster
    }

    /// Starts a node (a new one, or one restarted with an id the log already knows): it reads the log from its
    /// start, and its sequence numbers begin above every earlier one.
    fn start(&mut self, id: &str) -> usize {
        let first_seq = self.log.iter().map(|e| e.seq + 1).max().unwrap_or(0) + 1000;
        let node = Node {
            author: Author {
                id: id.to_string(),
                first_seq,
            },
            driver: Driver::new(
                Engine::new(config(), Vec::new(), Vec::new()),
                &conn_prefix(id),
                true,
                StoreState::default(),
                self.clock.now,
            ),
            store: FakeStore {
                shared: true,
                ..FakeStore::default()
            },
            read: 0,
            next_seq: first_seq,
            alive: true,
            frames: Vec::new(),
            orders: Vec::new(),
        };
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .rposition(|n| n.author.id == id)
            .expect("a node with that id")
    }

    /// Appends `command` as node `id` did, at the log's clock.
    fn append(&mut self, id: &str, command: impl Into<Command>) {
        let n = self.node(id);
        assert!(self.nodes[n].alive, "a crashed node appends nothing");
        let seq = self.nodes[n].next_seq;
        self.nodes[n].next_seq += 1;
        self.log.push(LoggedEntry {
            origin: id.to_string(),
            seq,
            at: self.clock.now,
            command: command.into(),
        });
    }

    /// Every live node applies what it has not read yet, as one batch.
    fn sync(&mut self) {
        for n in 0..self.nodes.len() {
            self.catch_up(n);
        }
    }

    fn catch_up(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.alive || node.read == self.log.len() {
            return;
        }
        let batch = self.log[node.read..]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Input::Entry(Box::new(Entry {
                    pos: LogPos(e.at.timestamp_millis() as u64, (node.read + i) as u64),
                    now: Some(e.at),
                    command: Some(e.command.clone()),
                    own: node.author.wrote(&e.origin, e.seq),
                    shared: true,
                    pending: None,
                }))
            })
            .collect();
        node.read = self.log.len();
        let settled = node.driver.settle(batch, &mut node.store, &mut self.clock);
        let held = conn_prefix(&node.author.id);
        for delivery in settled.deliveries {
            for conn in delivery.to.iter().filter(|c| c.starts_with(&held)) {
                let frame = serde_json::from_str(&delivery.frame).expect("frames are JSON");
                node.frames.push((conn.to_string(), frame));
            }
        }
        node.orders.extend(settled.orders);
    }

    /// The clock moves on; every live node asks for due grace windows to end as the driver's thread would (the
    /// lowest live id is the primary), and everyone reads what was appended.
    fn tick(&mut self, ms: i64) {
        self.clock.advance_ms(ms);
        let now = self.clock.now;
        let primary = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.author.id.clone())
            .min();
        for n in 0..self.nodes.len() {
            let node = &mut self.nodes[n];
            let is_primary = primary.as_deref() == Some(node.author.id.as_str());
            if node.alive && node.driver.ask_timeout(now, is_primary) {
                let id = node.author.id.clone();
                self.append(&id, Command::Timeout);
            }
        }
        self.sync();
    }

    /// Every user with whether they are online, as node `n` answers a server token.
    fn users(&self, n: usize) -> Vec<(String, bool)> {
        users(self.nodes[n].driver.engine())
    }

    /// The `online` of every `user.presence.changed` about `user` that reached `conn`, in order.
    fn presence_seen(&self, conn: &str, user: &str) -> Vec<bool> {
        self.nodes
            .iter()
            .flat_map(|n| &n.frames)
            .filter(|(to, f)| {
                to == conn && f["type"] == "user.presence.changed" && f["user"]["id"] == user
            })
            .map(|(_, f)| f["user"]["online"].as_bool().unwrap_or(false))
            .collect()
    }
}

fn follow(user: &str, conn: &str, ids: &[&str]) -> FollowUsers {
    FollowUsers {
        caller: Caller::User(user.to_string()),
        conn: conn.to_string(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn online(users: &[(&str, bool)]) -> Vec<(String, bool)> {
    users.iter().map(|(id, on)| (id.to_string(), *on)).collect()
}

/// bob on node b follows alice; alice connects on node a.
fn alice_on_a_watched_from_b(c: &mut Cluster) {
    c.append("b", connect("b:bob", "bob"));
    c.append("b", follow("bob", "b:bob", &["alice"]));
    c.append("a", connect("a:alice", "alice"));
    c.sync();
}

#[test]
fn every_node_reaches_the_same_state_and_a_node_that_joins_or_pauses_catches_up() {
    let mut c = Cluster::new(&["a", "b", "c"]);
    alice_on_a_watched_from_b(&mut c);
    c.nodes[2].alive = false; // c stops reading for a while
    c.append("a", upsert("carol"));
    c.append("b", disconnect("b:bob", Ending::Explicit));
    c.sync();
    c.nodes[2].alive = true;
    c.sync();
    let want = online(&[("alice", true), ("bob", false), ("carol", false)]);
    for n in 0..3 {
        assert_eq!(c.users(n), want, "node {n}");
    }
    assert_eq!(
        c.presence_seen("b:bob", "alice"),
        [true],
        "bob on b saw alice come online on a"
    );
    let d = c.start("d");
    c.sync();
    assert_eq!(c.users(d), want, "a node that joins replays the log");
    assert_eq!(
        c.nodes[d].driver.engine().view().open_connections(),
        c.nodes[0].driver.engine().view().open_connections()
    );
}

#[test]
fn a_node_declared_gone_ends_its_connections_everywhere_and_closes_its_own_sockets() {
    let mut c = Cluster::new(&["a", "b"]);
    alice_on_a_watched_from_b(&mut c);
    // b saw a's key expire; a was only cut off and still reads the log.
    c.append("b", NodeDown { node: "a".into() });
    c.sync();
    assert_eq!(c.presence_seen("b:bob", "alice"), [true, false]);
    for n in 0..2 {
        assert_eq!(c.users(n), online(&[("alice", false), ("bob", true)]));
    }
    let a = c.node("a");
    assert!(
        c.nodes[a].orders.contains(&SocketOrder::Close(
            "a:alice".into(),
            close_code::GOING_AWAY
        )),
        "the cut-off node closes its sockets with 1001, so its clients reconnect: {:?}",
        c.nodes[a].orders
    );
    let b = c.node("b");
    assert!(
        !c.nodes[b]
            .orders
            .iter()
            .any(|o| matches!(o, SocketOrder::Close(conn, _) if conn.starts_with("b:"))),
        "b's own sockets stay open"
    );
}

#[test]
fn a_grace_window_ends_on_the_backup_when_the_primary_is_gone_and_on_time_when_it_is_not() {
    for primary_alive in [true, false] {
        let mut c = Cluster::new(&["a", "b"]);
        c.append("b", connect("b:bob", "bob"));
        c.append("b", follow("bob", "b:bob", &["alice"]));
        c.append("b", connect("b:alice", "alice"));
        c.sync();
        c.append("b", disconnect("b:alice", Ending::Abnormal));
        c.sync();
        let ended = c.clock.now;
        // a is the primary (lowest id); b only asks a moment later if nobody did. Membership has not yet
        // declared a gone: to b, a is still the primary.
        let a = c.node("a");
        c.nodes[a].alive = primary_alive;
        let offline_at = loop {
            c.clock.advance_ms(100);
            let now = c.clock.now;
            for n in 0..2 {
                let is_primary = c.nodes[n].author.id == "a";
                if c.nodes[n].alive && c.nodes[n].driver.ask_timeout(now, is_primary) {
                    let id = c.nodes[n].author.id.clone();
                    c.append(&id, Command::Timeout);
                }
            }
            c.sync();
            if c.presence_seen("b:bob", "alice").last() == Some(&false) {
                break now - ended;
            }
            assert!(
                now - ended < TimeDelta::seconds(30),
                "alice never went offline"
            );
        };
        let grace = TimeDelta::milliseconds(GRACE_MS);
        if primary_alive {
            assert_eq!(offline_at, grace, "the primary ends it when due");
        } else {
            assert_eq!(
                offline_at,
                grace + TIMEOUT_BACKUP,
                "the backup ends it a moment later"
            );
        }
        assert_eq!(
            c.presence_seen("b:bob", "alice"),
            [true, false],
            "said once"
        );
    }
}

#[test]
fn a_node_restarted_with_the_same_id_ends_what_its_predecessor_left_and_stores_none_of_its_entries()
{
    let mut c = Cluster::new(&["a", "b"]);
    c.append("a", upsert("dora"));
    alice_on_a_watched_from_b(&mut c);
    let old = c.node("a");
    c.nodes[old].alive = false; // kill -9: nothing appended, nothing read
    let new = c.start("a");
    // What the restarted process does first: it ends its predecessor's connections.
    c.append("a", NodeDown { node: "a".into() });
    c.sync();
    assert_eq!(c.presence_seen("b:bob", "alice"), [true, false]);
    assert_eq!(c.users(new), c.users(c.node("b")));
    assert_eq!(
        c.nodes[new].store.saved(),
        Vec::<String>::new(),
        "on a shared store, the predecessor's writes are not written again over newer ones"
    );
    assert!(
        c.nodes[new].store.touches().contains(&"alice".to_string()),
        "its own entry's writes are stored: {:?}",
        c.nodes[new].store.commits
    );
    c.tick(100);
    assert_eq!(
        c.users(new),
        online(&[("alice", false), ("bob", true), ("dora", false)])
    );
}
