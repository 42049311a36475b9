//! The entries a cluster log holds, as the server writes them: a population (users, channels, connected users
//! following others and watching a channel) built by log entries, then sequences of one kind of entry each and
//! the steady mix of a connected crowd. Each entry is a [`Command`] encoded by the server's own `encode`.

use std::collections::{HashMap, VecDeque};

use presence_server::ceiling::{encode, Command};
use serde_json::{json, Value};

/// The nodes that append entries: connection ids name their node, as the server's do.
const NODES: u64 = 3;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Shape {
    pub users: usize,
    /// Users that come and go; the others are stored but never connect.
    pub active: usize,
    /// Connected users at the start (and, on average, throughout the mix).
    pub connected: usize,
    pub channels: usize,
    pub members: usize,
    /// Users each connection follows (`queryUsers` with `presence: true`).
    pub follows: usize,
    /// The offline grace window, for the mix's grace ends.
    pub grace_ms: u64,
}

/// What a connected user does per hour in the steady mix: sessions start (connect, follow, watch a channel) and
/// end (half of them abnormally, each then ending in a grace window's end), a status line changes, invisibility
/// flips. Health checks and `last_active` refreshes stay on the user's node and are not log entries.
pub const SESSIONS_PER_HOUR: f64 = 2.0;
pub const STATUS_PER_HOUR: f64 = 1.0;
pub const INVISIBLE_PER_HOUR: f64 = 0.5;
pub const ABNORMAL_SHARE: f64 = 0.5;

/// A small deterministic generator (SplitMix64).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One entry: its kind and the command as the log holds it (JSON).
#[derive(Clone)]
pub struct Logged {
    pub kind: &'static str,
    pub json: String,
}

fn logged(kind: &'static str, command: Value) -> Logged {
    let command: Command = serde_json::from_value(command).expect("a command the server reads");
    Logged {
        kind,
        json: encode(&command).expect("a command the server writes"),
    }
}

fn user_id(i: usize) -> String {
    format!("user-{i:06}")
}

/// Who is connected and how, as the log's entries so far left it.
#[derive(Clone)]
pub struct World {
    shape: Shape,
    rng: Rng,
    /// Each active user's channels.
    memberships: Vec<Vec<usize>>,
    /// Connected users and their connection, and where each user sits in it.
    online: Vec<(usize, String)>,
    online_at: Vec<Option<usize>>,
    offline: Vec<usize>,
    offline_at: Vec<Option<usize>>,
    invisible: Vec<bool>,
    /// The channel each connection watches.
    watching: HashMap<String, usize>,
    next_conn: u64,
    /// Grace windows open, by their end (the log's milliseconds since the mix started).
    graces: VecDeque<u64>,
    pub now_ms: u64,
}

impl World {
    /// The population and the entries that build it: users upserted 100 at a time (server token), channels of
    /// `members` active users created (server token), then `connected` active users connect, each following
    /// `follows` active users and watching one of its channels with presence.
    pub fn build(shape: &Shape, seed: u64) -> (World, Vec<Logged>) {
        let mut rng = Rng::new(seed);
        let mut entries = Vec::new();
        let ids: Vec<usize> = (0..shape.users).collect();
        for batch in ids.chunks(100) {
            let users: serde_json::Map<String, Value> = batch
                .iter()
                .map(|&i| {
                    let data = json!({
                        "id": user_id(i),
                        "name": format!("User {i}"),
                        "image": format!("https://example.com/avatars/{i}.png"),
                        "status": "available",
                        "team": format!("team-{}", i % 50),
                    });
                    (user_id(i), data)
                })
                .collect();
            entries.push(logged(
                "upsert",
                json!({"UpsertUsers": {"caller": "Server", "users": users}}),
            ));
        }
        let mut memberships = vec![Vec::new(); shape.active];
        for c in 0..shape.channels {
            let mut members: Vec<usize> = Vec::new();
            while members.len() < shape.members.min(shape.active) {
                let m = rng.below(shape.active);
                if !members.contains(&m) {
                    members.push(m);
                }
            }
            for &m in &members {
                memberships[m].push(c);
            }
            let ids: Vec<String> = members.iter().map(|&m| user_id(m)).collect();
            entries.push(logged(
                "create channel",
                json!({"QueryChannel": {
                    "caller": "Server", "conn_id": null, "channel_type": "messaging",
                    "channel_id": format!("team-{c}"),
                    "req": {"data": {"members": ids, "created_by_id": ids[0], "name": format!("Team {c}")}},
                }}),
            ));
        }
        let mut world = World {
            shape: shape.clone(),
            rng,
            memberships,
            online: Vec::new(),
            online_at: vec![None; shape.active],
            offline: (0..shape.active).collect(),
            offline_at: (0..shape.active).map(Some).collect(),
            invisible: vec![false; shape.active],
            watching: HashMap::new(),
            next_conn: 0,
            graces: VecDeque::new(),
            now_ms: 0,
        };
        for _ in 0..shape.connected.min(shape.active) {
            entries.extend(world.session_start());
        }
        (world, entries)
    }

    fn new_conn(&mut self) -> String {
        self.next_conn += 1;
        let node = self.next_conn % NODES;
        let id = uuid::Uuid::from_u64_pair(self.rng.next(), self.rng.next());
        format!("node{node}:{id}")
    }

    fn random_offline(&mut self) -> Option<usize> {
        (!self.offline.is_empty()).then(|| self.offline[self.rng.below(self.offline.len())])
    }

    fn random_online(&mut self) -> Option<(usize, String)> {
        (!self.online.is_empty()).then(|| self.online[self.rng.below(self.online.len())].clone())
    }

    fn set_online(&mut self, user: usize, conn: Option<String>) {
        if let Some(at) = self.offline_at[user].take() {
            self.offline.swap_remove(at);
            if let Some(&moved) = self.offline.get(at) {
                self.offline_at[moved] = Some(at);
            }
        }
        if let Some(at) = self.online_at[user].take() {
            self.online.swap_remove(at);
            if let Some((moved, _)) = self.online.get(at) {
                self.online_at[*moved] = Some(at);
            }
        }
        match conn {
            Some(conn) => {
                self.online_at[user] = Some(self.online.len());
                self.online.push((user, conn));
            }
            None => {
                self.offline_at[user] = Some(self.offline.len());
                self.offline.push(user);
            }
        }
    }

    /// A connect of an offline user, as the client sends it (`user_details`: id and name).
    fn connect(&mut self, user: usize) -> (Logged, String) {
        let conn = self.new_conn();
        let id = user_id(user);
        let entry = logged(
            "connect",
            json!({"Connect": {
                "conn": conn, "user_id": id,
                "details": {"id": id, "name": format!("User {user}")},
                "replaceable": [],
            }}),
        );
        self.set_online(user, Some(conn.clone()));
        (entry, conn)
    }

    /// The connection follows `follows` other active users (one `queryUsers` with `presence: true`).
    fn follow(&mut self, user: usize, conn: &str) -> Logged {
        let mut ids = Vec::with_capacity(self.shape.follows);
        while ids.len() < self.shape.follows.min(self.shape.active - 1) {
            let other = self.rng.below(self.shape.active);
            let id = user_id(other);
            if other != user && !ids.contains(&id) {
                ids.push(id);
            }
        }
        logged(
            "follow",
            json!({"FollowUsers": {"caller": {"User": user_id(user)}, "conn": conn, "ids": ids}}),
        )
    }

    /// `channel.watch()` with presence: the channel's state, watched by the connection.
    fn watch(&mut self, user: usize, conn: &str, channel: usize) -> Logged {
        self.watching.insert(conn.to_string(), channel);
        logged(
            "watch",
            json!({"QueryChannel": {
                "caller": {"User": user_id(user)}, "conn_id": conn, "channel_type": "messaging",
                "channel_id": format!("team-{channel}"),
                "req": {"state": true, "watch": true, "presence": true},
            }}),
        )
    }

    /// A session starts: connect, follow, watch one of the user's channels.
    fn session_start(&mut self) -> Vec<Logged> {
        let Some(user) = self.random_offline() else {
            return Vec::new();
        };
        let (connect, conn) = self.connect(user);
        let mut entries = vec![connect, self.follow(user, &conn)];
        let channels = &self.memberships[user];
        if !channels.is_empty() {
            let channel = channels[self.rng.below(channels.len())];
            entries.push(self.watch(user, &conn, channel));
        }
        entries
    }

    fn disconnect(&mut self, abnormal: bool) -> Option<Logged> {
        let (user, conn) = self.random_online()?;
        self.set_online(user, None);
        self.watching.remove(&conn);
        if abnormal && !self.invisible[user] {
            self.graces.push_back(self.now_ms + self.shape.grace_ms);
        }
        let ending = if abnormal { "Abnormal" } else { "Explicit" };
        Some(logged(
            if abnormal {
                "disconnect (abnormal)"
            } else {
                "disconnect"
            },
            json!({"Disconnect": {"conn": conn, "ending": ending}}),
        ))
    }

    fn status(&mut self) -> Option<Logged> {
        let (user, _) = self.random_online()?;
        let status = format!("In a meeting until {}:00", 9 + self.rng.below(9));
        Some(logged(
            "status",
            json!({"PartialUpdateUsers": {"caller": {"User": user_id(user)},
                "updates": [{"id": user_id(user), "set": {"status": status}, "unset": []}]}}),
        ))
    }

    fn flip_invisible(&mut self) -> Option<Logged> {
        let (user, _) = self.random_online()?;
        self.invisible[user] = !self.invisible[user];
        Some(logged(
            "invisible",
            json!({"PartialUpdateUsers": {"caller": {"User": user_id(user)},
                "updates": [{"id": user_id(user), "set": {"invisible": self.invisible[user]}, "unset": []}]}}),
        ))
    }

    /// A connection of a user with another channel watches it too.
    fn watch_another(&mut self) -> Option<Logged> {
        for _ in 0..50 {
            let (user, conn) = self.random_online()?;
            let watched = self.watching.get(&conn).copied();
            let others: Vec<usize> = self.memberships[user]
                .iter()
                .copied()
                .filter(|&c| Some(c) != watched)
                .collect();
            if !others.is_empty() {
                let channel = others[self.rng.below(others.len())];
                return Some(self.watch(user, &conn, channel));
            }
        }
        None
    }

    /// `n` entries of one kind from this state (fewer when the state runs out of candidates).
    pub fn kind(&mut self, kind: &str, n: usize) -> Vec<Logged> {
        (0..n)
            .map_while(|_| match kind {
                "connect" => {
                    let user = self.random_offline()?;
                    Some(self.connect(user).0)
                }
                "disconnect" => self.disconnect(false),
                "follow" => {
                    let (user, conn) = self.random_online()?;
                    Some(self.follow(user, &conn))
                }
                "watch" => self.watch_another(),
                "status" => self.status(),
                "invisible" => self.flip_invisible(),
                _ => panic!("unknown kind {kind}"),
            })
            .collect()
    }

    /// `n` entries of the steady mix: events drawn in the proportions of [`SESSIONS_PER_HOUR`] and the rest, one
    /// entry per millisecond of the log's time, with a grace window's end (`Timeout`) logged once one is due.
    /// Returns the entries and the events drawn.
    pub fn mix(&mut self, n: usize) -> (Vec<Logged>, usize) {
        let total = 2.0 * SESSIONS_PER_HOUR + STATUS_PER_HOUR + INVISIBLE_PER_HOUR;
        let mut entries = Vec::with_capacity(n + 4);
        let mut events = 0;
        while entries.len() < n {
            if self.graces.front().is_some_and(|&end| end <= self.now_ms) {
                while self.graces.front().is_some_and(|&end| end <= self.now_ms) {
                    self.graces.pop_front();
                }
                entries.push(logged("grace end", json!("Timeout")));
                self.now_ms += 1;
            }
            let pick = self.rng.unit() * total;
            let drawn = if pick < SESSIONS_PER_HOUR {
                self.session_start()
            } else if pick < 2.0 * SESSIONS_PER_HOUR {
                let abnormal = self.rng.unit() < ABNORMAL_SHARE;
                self.disconnect(abnormal).into_iter().collect()
            } else if pick < 2.0 * SESSIONS_PER_HOUR + STATUS_PER_HOUR {
                self.status().into_iter().collect()
            } else {
                self.flip_invisible().into_iter().collect()
            };
            events += 1;
            self.now_ms += drawn.len() as u64;
            entries.extend(drawn);
        }
        (entries, events)
    }
}

/// Events a connected user causes per hour in the mix.
pub fn events_per_user_hour() -> f64 {
    2.0 * SESSIONS_PER_HOUR + STATUS_PER_HOUR + INVISIBLE_PER_HOUR
}
