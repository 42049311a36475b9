//! What the driver's tests run it with: a store that fails on command, a manual clock, and entries of a log.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::JsonMap;
use serde_json::json;

use super::driver::Clock;
use super::log::{Entry, LogPos};
use super::pending::{Answer, Pending, Waiting};
use crate::model::{Caller, Write};
use crate::presence::command::{Command, Operation};
use crate::presence::command::{Connect, Disconnect, UpsertUsers};
use crate::presence::{Config, ConnId, Ending, Engine};
use crate::store::{Stamped, Store, StoreError};
use presence_protocol::QueryUsersPayload;

/// A database failure with this message.
#[derive(Debug)]
pub struct Failure(pub &'static str);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Failure {}

/// A store that keeps every commit, fails every one while `down`, and refuses any commit saving the user
/// `poison` (as PostgreSQL refuses a key too large for its index).
#[derive(Default)]
pub struct FakeStore {
    pub commits: Vec<Vec<Stamped>>,
    pub tries: usize,
    pub down: bool,
    pub shared: bool,
}

impl FakeStore {
    /// Users saved by the commits so far, in order.
    pub fn saved(&self) -> Vec<String> {
        self.commits
            .iter()
            .flatten()
            .filter_map(|w| match &w.write {
                Write::SaveUser(u) => Some(u.id.clone()),
                _ => None,
            })
            .collect()
    }

    /// `last_active` stamps committed so far, by user, in order.
    pub fn touches(&self) -> Vec<String> {
        self.commits
            .iter()
            .flatten()
            .filter_map(|w| match &w.write {
                Write::TouchLastActive(id, _) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Store for FakeStore {
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        self.tries += 1;
        if self.down {
            return Err(StoreError::Write(Arc::new(Failure("connection refused"))));
        }
        let poisoned = writes
            .iter()
            .any(|w| matches!(&w.write, Write::SaveUser(u) if u.id == "poison"));
        if poisoned {
            return Err(StoreError::Refused(Arc::new(Failure(
                "index row size exceeds btree maximum",
            ))));
        }
        if !writes.is_empty() {
            self.commits.push(writes.to_vec());
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        self.shared
    }
}

/// A clock that moves only when told to (pausing moves it too), recording the pauses.
pub struct ManualClock {
    pub now: DateTime<Utc>,
    pub pauses: Vec<Duration>,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock {
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            pauses: Vec::new(),
        }
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now += TimeDelta::milliseconds(ms);
    }
}

impl Clock for ManualClock {
    fn now(&mut self) -> DateTime<Utc> {
        self.now
    }

    fn pause(&mut self, how_long: Duration) {
        self.pauses.push(how_long);
        self.now += TimeDelta::from_std(how_long).unwrap_or_default();
    }
}

pub const GRACE_MS: i64 = 3000;

pub fn config() -> Config {
    Config {
        offline_grace: Duration::from_millis(GRACE_MS as u64),
        watch_implies_presence: false,
        max_connections_per_user: 5,
        max_channels_per_user: 10,
        last_active_refresh: Duration::from_secs(900),
        max_follows_per_connection: 5000,
        distinct_channel_key: crate::presence::distinct_channel_key("a secret"),
        webhook_url: None,
        webhook_events: Vec::new(),
    }
}

pub fn upsert(id: &str) -> UpsertUsers {
    let mut data = JsonMap::new();
    data.insert("name".into(), json!(id));
    UpsertUsers {
        caller: Caller::Server,
        users: [(id.to_string(), data)].into(),
    }
}

pub fn connect(conn: &str, user_id: &str) -> Connect {
    Connect {
        conn: ConnId::from(conn),
        user_id: user_id.to_string(),
        details: JsonMap::new(),
        replaceable: Vec::new(),
    }
}

pub fn disconnect(conn: &str, ending: Ending) -> Command {
    Disconnect {
        conn: ConnId::from(conn),
        ending,
    }
    .into()
}

/// An entry of the local log (applied at the driver's clock, undone if its writes fail).
pub fn local(command: Command, pending: Option<Box<dyn Pending>>) -> Box<Entry> {
    Box::new(Entry {
        pos: LogPos::default(),
        now: None,
        command: Some(command),
        own: true,
        shared: false,
        pending,
    })
}

/// `op` with its caller, and where its answer arrives.
pub fn waiting<O: Operation>(op: O) -> (Box<dyn Pending>, Answer<O>) {
    let (pending, rx) = Waiting::new(op);
    (pending, rx)
}

/// Every user, sorted by id, with whether they are online, as `engine` answers a server token.
pub fn users(engine: &Engine) -> Vec<(String, bool)> {
    let payload: QueryUsersPayload = serde_json::from_value(json!({
        "filter_conditions": {},
        "sort": [{ "field": "id", "direction": 1 }],
        "limit": 100,
    }))
    .unwrap_or_default();
    engine
        .view()
        .query_users(&Caller::Server, &payload)
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.id, u.online))
        .collect()
}
