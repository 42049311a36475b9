//! The engine's state-changing operations as data: each one a type with its own typed result
//! ([`Operation::Output`]), and all of them one [`Command`] that can be written to a log and applied again
//! elsewhere. Whatever runs the engine — one process, or every node of a cluster reading one log — applies the
//! same commands through [`Command::apply`] (or, where a caller waits, [`Operation::apply`] for its typed
//! result), so there is one command path. Applying a command touches nothing outside the engine: what it asks of
//! sockets (close one, forget one) is an output the driver drains with [`Engine::poll_socket_orders`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use presence_protocol::codes::close_code;
use presence_protocol::{
    ChannelQueryRequest, ChannelStateResponse, JsonMap, PartialUserUpdate, UpdateChannelRequest,
    UpdateChannelResponse, User,
};
use serde::{Deserialize, Serialize};

use super::types::{ConnId, Ending, SocketOrder};
use super::{ChannelPage, Engine};
use crate::error::Error;
use crate::model::{AppSettings, Caller};

/// One state-changing operation of the engine, with the result its caller waits for.
pub trait Operation: Into<Command> + Clone + Send + 'static {
    /// What the caller gets when the operation is applied and durable.
    type Output: Send + 'static;

    /// The operation's name in error messages (`"UpdateUsers failed with error: ..."`).
    const NAME: &'static str;

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error>;

    /// Applies the operation for nobody waiting on its result: the same changes to the engine, its result not
    /// built where building it costs (every cluster node applies every node's entries, and answers only its own).
    fn apply_unanswered(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        self.apply(engine, now).map(drop)
    }

    /// What to apply when the caller has gone by the time its answer is ready (a connection whose socket
    /// nobody serves any more must end again).
    fn abandoned(&self) -> Option<Command> {
        None
    }
}

/// A new connection of `user_id`, applying `details` as on connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connect {
    pub conn: ConnId,
    pub user_id: String,
    pub details: JsonMap,
    /// The user's connections whose holder found dead (missed a pong) when the connection arrived: at the cap,
    /// the oldest of them gives way and is closed with 4002.
    pub replaceable: Vec<ConnId>,
}

impl Operation for Connect {
    type Output = ();
    const NAME: &'static str = "Connect";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        let replaced = engine.connect(
            Arc::clone(&self.conn),
            &self.user_id,
            &self.details,
            &self.replaceable,
            now,
        )?;
        if let Some(old) = replaced {
            engine.order(SocketOrder::Close(old, close_code::PONG_TIMEOUT));
        }
        Ok(())
    }

    fn abandoned(&self) -> Option<Command> {
        Some(Command::Disconnect(Disconnect {
            conn: Arc::clone(&self.conn),
            ending: Ending::Abnormal,
        }))
    }
}

/// A connection ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disconnect {
    pub conn: ConnId,
    pub ending: Ending,
}

impl Operation for Disconnect {
    type Output = ();
    const NAME: &'static str = "Disconnect";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        engine.disconnect(&self.conn, self.ending, now);
        engine.order(SocketOrder::Forget(Arc::clone(&self.conn)));
        Ok(())
    }
}

/// `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpsertUsers {
    pub caller: Caller,
    pub users: BTreeMap<String, JsonMap>,
}

impl Operation for UpsertUsers {
    type Output = BTreeMap<String, User>;
    const NAME: &'static str = "UpdateUsers";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error> {
        engine.upsert_users(&self.caller, &self.users, now)
    }
}

/// `PATCH /users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialUpdateUsers {
    pub caller: Caller,
    pub updates: Vec<PartialUserUpdate>,
}

impl Operation for PartialUpdateUsers {
    type Output = BTreeMap<String, User>;
    const NAME: &'static str = "UpdateUsersPartial";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error> {
        engine.partial_update_users(&self.caller, &self.updates, now)
    }
}

/// The caller's connection follows the users a `queryUsers` with `presence` returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowUsers {
    pub caller: Caller,
    pub conn: String,
    pub ids: Vec<String>,
}

impl Operation for FollowUsers {
    /// The users followed, as they are now; None when the connection may not subscribe.
    type Output = Option<Vec<User>>;
    const NAME: &'static str = "QueryUsers";

    fn apply(&self, engine: &mut Engine, _now: DateTime<Utc>) -> Result<Self::Output, Error> {
        engine.follow_user_ids(&self.caller, Some(&self.conn), &self.ids)
    }

    fn apply_unanswered(&self, engine: &mut Engine, _now: DateTime<Utc>) -> Result<(), Error> {
        engine
            .follow_ids(&self.caller, Some(&self.conn), &self.ids)
            .map(drop)
    }
}

/// `POST /channels/{type}/{id}/query` (or the distinct-channel path without an id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryChannel {
    pub caller: Caller,
    pub conn_id: Option<String>,
    pub channel_type: String,
    pub channel_id: Option<String>,
    pub req: ChannelQueryRequest,
}

impl Operation for QueryChannel {
    type Output = ChannelStateResponse;
    const NAME: &'static str = "GetOrCreateChannel";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error> {
        engine.query_channel(
            &self.caller,
            self.conn_id.as_deref(),
            &self.channel_type,
            self.channel_id.as_deref(),
            &self.req,
            now,
        )
    }
}

/// The channels of a `queryChannels` page as the caller sees them, watched first if the page asks for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelStates {
    pub caller: Caller,
    pub conn_id: Option<String>,
    pub page: ChannelPage,
}

impl Operation for ChannelStates {
    type Output = Vec<ChannelStateResponse>;
    const NAME: &'static str = "QueryChannels";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error> {
        Ok(engine.channel_states(&self.caller, self.conn_id.as_deref(), &self.page, now))
    }

    fn apply_unanswered(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        engine.watch_page(&self.caller, self.conn_id.as_deref(), &self.page, now);
        Ok(())
    }
}

/// `POST /channels/{type}/{id}/stop-watching`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopWatching {
    pub caller: Caller,
    pub conn_id: Option<String>,
    pub cid: String,
}

impl Operation for StopWatching {
    type Output = ();
    const NAME: &'static str = "StopWatchingChannel";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        engine.stop_watching(&self.caller, self.conn_id.as_deref(), &self.cid, now)
    }
}

/// `POST /channels/{type}/{id}`: members added and removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateMembers {
    pub caller: Caller,
    pub channel_type: String,
    pub channel_id: String,
    pub req: UpdateChannelRequest,
}

impl Operation for UpdateMembers {
    type Output = UpdateChannelResponse;
    const NAME: &'static str = "UpdateChannel";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<Self::Output, Error> {
        engine.update_members(
            &self.caller,
            &self.channel_type,
            &self.channel_id,
            &self.req,
            now,
        )
    }
}

/// `PATCH /app`: the app's settings (`webhook_url`; an empty string clears it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateApp {
    pub caller: Caller,
    pub webhook_url: Option<String>,
}

impl Operation for UpdateApp {
    type Output = AppSettings;
    const NAME: &'static str = "UpdateApp";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<AppSettings, Error> {
        engine.update_app(&self.caller, self.webhook_url.as_deref(), now)
    }
}

/// The grace windows due at the command's time end.
#[derive(Debug, Clone, Copy)]
pub struct EndGraces;

impl Operation for EndGraces {
    type Output = ();
    const NAME: &'static str = "Timeout";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        engine.handle_timeout(now);
        Ok(())
    }
}

/// A server process is gone: its connections end as if closed by their clients, and are closed (1001) where
/// they are still held — by that process itself, when it was only cut off, so its clients reconnect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDown {
    pub node: String,
}

impl Operation for NodeDown {
    type Output = ();
    const NAME: &'static str = "Shutdown";

    fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        for conn in engine.disconnect_prefixed(&conn_prefix(&self.node), now) {
            engine.order(SocketOrder::Close(
                Arc::clone(&conn),
                close_code::GOING_AWAY,
            ));
            engine.order(SocketOrder::Forget(conn));
        }
        Ok(())
    }
}

/// The prefix of the connection ids a node gives out.
pub fn conn_prefix(node: &str) -> String {
    format!("{node}:")
}

/// Every state-changing operation. Serialized as `{"Connect": {...}}` (`"Timeout"` for the unit variant), the
/// form the cluster log has always held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Connect(Connect),
    Disconnect(Disconnect),
    UpsertUsers(UpsertUsers),
    PartialUpdateUsers(PartialUpdateUsers),
    FollowUsers(FollowUsers),
    QueryChannel(QueryChannel),
    ChannelStates(ChannelStates),
    StopWatching(StopWatching),
    Timeout,
    NodeDown(NodeDown),
    UpdateApp(UpdateApp),
    UpdateMembers(UpdateMembers),
}

macro_rules! into_command {
    ($($op:ident),*) => {$(
        impl From<$op> for Command {
            fn from(op: $op) -> Command {
                Command::$op(op)
            }
        }
    )*};
}

into_command!(
    Connect,
    Disconnect,
    UpsertUsers,
    PartialUpdateUsers,
    FollowUsers,
    QueryChannel,
    ChannelStates,
    StopWatching,
    NodeDown,
    UpdateApp,
    UpdateMembers
);

impl From<EndGraces> for Command {
    fn from(_: EndGraces) -> Command {
        Command::Timeout
    }
}

impl Command {
    /// Whether a caller's request rather than something that happened (which cannot be refused).
    pub fn is_request(&self) -> bool {
        !matches!(
            self,
            Command::Disconnect(_) | Command::Timeout | Command::NodeDown(_)
        )
    }

    /// Applies the command to `engine` at `now`, for nobody waiting on its result.
    pub fn apply(&self, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
        fn run<O: Operation>(op: &O, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), Error> {
            op.apply_unanswered(engine, now)
        }
        match self {
            Command::Connect(op) => run(op, engine, now),
            Command::Disconnect(op) => run(op, engine, now),
            Command::UpsertUsers(op) => run(op, engine, now),
            Command::PartialUpdateUsers(op) => run(op, engine, now),
            Command::FollowUsers(op) => run(op, engine, now),
            Command::QueryChannel(op) => run(op, engine, now),
            Command::ChannelStates(op) => run(op, engine, now),
            Command::StopWatching(op) => run(op, engine, now),
            Command::Timeout => run(&EndGraces, engine, now),
            Command::NodeDown(op) => run(op, engine, now),
            Command::UpdateApp(op) => run(op, engine, now),
            Command::UpdateMembers(op) => run(op, engine, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_the_form_the_cluster_log_holds() {
        let down = serde_json::to_value(Command::from(NodeDown { node: "a".into() })).unwrap();
        assert_eq!(down, serde_json::json!({ "NodeDown": { "node": "a" } }));
        let timeout = serde_json::to_value(Command::from(EndGraces)).unwrap();
        assert_eq!(timeout, serde_json::json!("Timeout"));
        let read: Command = serde_json::from_value(serde_json::json!({
            "Disconnect": { "conn": "n:1", "ending": "Abnormal" }
        }))
        .unwrap();
        assert!(matches!(
            read,
            Command::Disconnect(Disconnect {
                ending: Ending::Abnormal,
                ..
            })
        ));
    }

    #[test]
    fn member_updates_are_a_command_of_their_own_and_older_entries_still_read() {
        let update = Command::from(UpdateMembers {
            caller: Caller::User("alice".into()),
            channel_type: "messaging".into(),
            channel_id: "c1".into(),
            req: serde_json::from_value(serde_json::json!({
                "add_members": ["bob", { "user_id": "carol" }], "remove_members": ["dave"]
            }))
            .unwrap(),
        });
        let written = serde_json::to_value(&update).unwrap();
        assert_eq!(
            written,
            serde_json::json!({ "UpdateMembers": {
                "caller": { "User": "alice" }, "channel_type": "messaging", "channel_id": "c1",
                "req": { "add_members": ["bob", { "user_id": "carol" }], "remove_members": ["dave"] }
            }})
        );
        let read: Command = serde_json::from_value(written).unwrap();
        assert!(
            matches!(&read, Command::UpdateMembers(u) if u.req.remove_members.is_some()),
            "{read:?}"
        );
        // A channel query as the log held it before member updates existed.
        let old: Command = serde_json::from_value(serde_json::json!({ "QueryChannel": {
            "caller": "Server", "conn_id": null, "channel_type": "messaging", "channel_id": "c1",
            "req": { "data": { "members": ["bob"] }, "state": true, "watch": false, "presence": false }
        }}))
        .unwrap();
        assert!(matches!(old, Command::QueryChannel(_)));
    }
}
