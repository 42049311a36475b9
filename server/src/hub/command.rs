//! The engine's state-changing operations as data. In cluster mode each one is appended to the shared log and
//! every process applies it, in log order, to its own engine; the process it came from answers its caller from
//! the [`Outcome`] when it applies its own entry. Applying a command has no effect outside the engine except
//! through the bus: a connection is evicted, detached or closed wherever it is held (elsewhere nothing happens).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use presence_protocol::codes::close_code;
use presence_protocol::{
    ChannelQueryRequest, ChannelStateResponse, JsonMap, PartialUserUpdate, User,
};
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, Outlet};
use crate::error::Error;
use crate::model::Caller;
use crate::presence::{ChannelPage, ConnId, Delivery, Ending, Engine};
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Connect {
        conn: ConnId,
        user_id: String,
        details: JsonMap,
        /// The user's connections its process found dead (missed a pong) when the connection arrived.
        replaceable: Vec<ConnId>,
    },
    Disconnect {
        conn: ConnId,
        ending: Ending,
    },
    UpsertUsers {
        caller: Caller,
        users: BTreeMap<String, JsonMap>,
    },
    PartialUpdateUsers {
        caller: Caller,
        updates: Vec<PartialUserUpdate>,
    },
    FollowUsers {
        caller: Caller,
        conn: String,
        ids: Vec<String>,
    },
    QueryChannel {
        caller: Caller,
        conn_id: Option<String>,
        channel_type: String,
        channel_id: Option<String>,
        req: ChannelQueryRequest,
    },
    ChannelStates {
        caller: Caller,
        conn_id: Option<String>,
        page: ChannelPage,
    },
    StopWatching {
        caller: Caller,
        conn_id: Option<String>,
        cid: String,
    },
    /// Grace windows due at the entry's time end.
    Timeout,
    /// A server process is gone: its connections end as if closed by their clients.
    NodeDown {
        node: String,
    },
}

/// What applying a command gave, for the caller waiting on it.
pub enum Outcome {
    Connected(Result<Option<ConnId>, Error>),
    Users(Result<BTreeMap<String, User>, Error>),
    /// The users followed, or None when the connection may not subscribe.
    Followed(Result<Option<Vec<User>>, Error>),
    Channel(Result<Box<ChannelStateResponse>, Error>),
    Channels(Vec<ChannelStateResponse>),
    Done(Result<(), Error>),
}

/// One entry of the cluster log, decoded: which process appended it, the time the log gave it, the command.
pub struct Entry {
    /// Appended by this process (not by an earlier process with the same node id).
    pub own: bool,
    pub origin: String,
    pub now: DateTime<Utc>,
    pub command: Command,
}

/// Answers the caller of an entry once its batch is settled (with the store's failure, if its commit failed).
pub type Waiter = Box<dyn FnOnce(Outcome, Option<&StoreError>) + Send>;

/// The prefix of the connection ids a process gives out in cluster mode.
pub fn conn_prefix(node: &str) -> String {
    format!("{node}:")
}

/// A bus that carries nothing: what a dry run would close or deliver stays unsaid.
struct Discard;

impl Bus for Discard {
    fn attach(&self, _: ConnId, _: Arc<Outlet>) {}
    fn detach(&self, _: &ConnId) {}
    fn publish(&self, _: Vec<Delivery>) {}
    fn close_all(&self, _: u16) {}
    fn evict(&self, _: &ConnId, _: u16) {}
    fn missed_pong(&self, _: &[ConnId]) -> Vec<ConnId> {
        Vec::new()
    }
    fn frames_sent(&self) -> u64 {
        0
    }
}

impl Command {
    /// Whether a caller's request rather than something that happened (facts cannot be refused).
    pub fn is_request(&self) -> bool {
        !matches!(
            self,
            Command::Disconnect { .. } | Command::Timeout | Command::NodeDown { .. }
        )
    }

    /// Applies the command to a copy of `engine` (cheap: its maps are persistent) and says what it would be
    /// refused with, touching nothing outside the copy.
    pub fn dry_run(&self, engine: &Engine, now: DateTime<Utc>) -> Result<(), Error> {
        let mut copy = engine.clone();
        self.apply(&mut copy, &Discard, now).checked().map(|_| ())
    }

    /// Applies the command to `engine` at `now`, closing or forgetting through `bus` the connections it ends.
    pub fn apply(&self, engine: &mut Engine, bus: &dyn Bus, now: DateTime<Utc>) -> Outcome {
        match self {
            Command::Connect {
                conn,
                user_id,
                details,
                replaceable,
            } => {
                let result = engine.connect(Arc::clone(conn), user_id, details, replaceable, now);
                if let Ok(Some(old)) = &result {
                    bus.evict(old, close_code::PONG_TIMEOUT);
                }
                Outcome::Connected(result)
            }
            Command::Disconnect { conn, ending } => {
                engine.disconnect(conn, *ending, now);
                bus.detach(conn);
                Outcome::Done(Ok(()))
            }
            Command::UpsertUsers { caller, users } => {
                Outcome::Users(engine.upsert_users(caller, users, now))
            }
            Command::PartialUpdateUsers { caller, updates } => {
                Outcome::Users(engine.partial_update_users(caller, updates, now))
            }
            Command::FollowUsers { caller, conn, ids } => {
                Outcome::Followed(engine.follow_user_ids(caller, Some(conn), ids))
            }
            Command::QueryChannel {
                caller,
                conn_id,
                channel_type,
                channel_id,
                req,
            } => Outcome::Channel(
                engine
                    .query_channel(
                        caller,
                        conn_id.as_deref(),
                        channel_type,
                        channel_id.as_deref(),
                        req,
                        now,
                    )
                    .map(Box::new),
            ),
            Command::ChannelStates {
                caller,
                conn_id,
                page,
            } => Outcome::Channels(engine.channel_states(caller, conn_id.as_deref(), page, now)),
            Command::StopWatching {
                caller,
                conn_id,
                cid,
            } => Outcome::Done(engine.stop_watching(caller, conn_id.as_deref(), cid, now)),
            Command::Timeout => {
                engine.handle_timeout(now);
                Outcome::Done(Ok(()))
            }
            Command::NodeDown { node } => {
                for conn in engine.disconnect_prefixed(&conn_prefix(node), now) {
                    // Held here only when this process is the one declared gone: its clients reconnect.
                    bus.evict(&conn, close_code::GOING_AWAY);
                    bus.detach(&conn);
                }
                Outcome::Done(Ok(()))
            }
        }
    }
}
