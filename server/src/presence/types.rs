//! The engine's vocabulary shared by its parts and its callers: connection ids, how a connection ended, the
//! engine's settings, and the deliveries it produces.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identifies one connection.
pub type ConnId = Arc<str>;

/// The hasher of every map and set keyed by connection: the ids are the server's own (random, never chosen by a
/// client), so a fast hasher does, and a fan-out hashes each recipient's id a few times. Each map is still
/// seeded at random.
pub type ConnHasher = foldhash::fast::RandomState;
/// A persistent map keyed by connection.
pub type ConnMap<V> =
    imbl::GenericHashMap<ConnId, V, ConnHasher, imbl::shared_ptr::DefaultSharedPtr>;
/// A persistent set of connections.
pub type ConnSet = imbl::GenericHashSet<ConnId, ConnHasher, imbl::shared_ptr::DefaultSharedPtr>;

/// One frame for some connections: serialized once, queued to each of `to` in the order deliveries are drained.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub frame: String,
    pub to: Vec<ConnId>,
    /// Set when the frame carries a user's whole state as of now: a frame of the same key still waiting in a
    /// recipient's send queue is stale once this one is queued, and is dropped there.
    pub supersedes: Option<StateKey>,
}

/// Which user's state a frame to others carries, and as which event: `user.presence.changed` and `user.updated`
/// each carry the whole public user, so of two queued frames of one kind about one user only the newer says
/// anything. Kinds are not mixed: a client listening for one of them still hears its last word. Frames to the
/// user's own connections carry no key: those hear every one of their own writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub user_id: Arc<str>,
    pub kind: StateEvent,
}

/// The events whose frames may supersede one another (see [`StateKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateEvent {
    PresenceChanged,
    Updated,
}

/// How a connection ended, as far as presence is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// The client closed with 1000 (`disconnectUser`): offline at once.
    Explicit,
    /// Anything else (network loss, 1001, 4001, pong timeout, eviction): offline after the grace window.
    Abnormal,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a user whose last connection ended abnormally still counts as online.
    pub offline_grace: Duration,
    /// Any watch of a channel subscribes to its members' presence.
    pub watch_implies_presence: bool,
    /// Open connections one user may hold.
    pub max_connections_per_user: usize,
    /// Channels one user token may create.
    pub max_channels_per_user: usize,
    /// How old the stored `last_active` of a connected user may grow before a ping writes it again (pings
    /// refresh the value everyone reads in memory; connects and last disconnects are always written).
    pub last_active_refresh: Duration,
    /// Users one connection may follow through `queryUsers` with `presence: true`.
    pub max_follows_per_connection: usize,
    /// The key the ids of distinct channels are derived with ([`distinct_channel_key`]): without it nobody can
    /// tell in advance which id a member set gets.
    ///
    /// [`distinct_channel_key`]: crate::presence::distinct_channel_key
    pub distinct_channel_key: Arc<[u8]>,
    /// Where webhook events go when the app's settings name no URL (`--webhook-url`).
    pub webhook_url: Option<String>,
    /// The event types sent to webhooks (`--webhook-events`).
    pub webhook_events: Vec<String>,
}

/// What the engine asks of a connection's socket, carried out by the driver once the operation that asked is
/// durable (and never when it was undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketOrder {
    /// Close the socket with this code, wherever it is held (elsewhere nothing happens).
    Close(ConnId, u16),
    /// The connection is gone from the engine: its socket receives nothing more.
    Forget(ConnId),
}
