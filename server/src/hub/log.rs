//! The seam under the driver: the ordered log of commands every engine applies. The driver appends each
//! state-changing operation to its [`Log`] and applies whatever the log hands back, in the log's order; it answers
//! a caller when it applies that caller's own entry. [`local::LocalLog`](super::local::LocalLog) is the
//! in-process sequence of a single server; the cluster's log on Redis is the same seam, read by every node.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::pending::Pending;
use crate::error::Error;
use crate::presence::command::{Command, NodeDown};

/// Where an entry sits in the log: for a shared log the stream id (milliseconds of the log's clock, then a
/// sequence number), for the local log a sequence number alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos(pub u64, pub u64);

impl LogPos {
    /// The milliseconds part, then the sequence number.
    pub fn parts(self) -> (u64, u64) {
        (self.0, self.1)
    }

    /// The time the log gave the entry (its milliseconds part).
    pub fn time(self) -> DateTime<Utc> {
        i64::try_from(self.0)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// This process as the author of entries: its node id, and the first sequence number it gave out. An entry is
/// this process's own only when both match — an earlier process with the same id (restarted, or cut off and
/// declared gone) wrote the entries below `first_seq`, and nobody here waits for them.
#[derive(Debug, Clone)]
pub struct Author {
    pub id: String,
    pub first_seq: u64,
}

impl Author {
    pub fn wrote(&self, origin: &str, seq: u64) -> bool {
        origin == self.id && seq >= self.first_seq
    }
}

/// One entry of the log, as handed to the driver.
pub struct Entry {
    pub pos: LogPos,
    /// The time to apply it at: the log's time for a shared log (every node applies it at the same `now`), None
    /// for the local log (applied at the driver's clock, as it runs).
    pub now: Option<DateTime<Utc>>,
    /// None when it could not be decoded: it is skipped, but its position counts as applied.
    pub command: Option<Command>,
    /// Appended by this process (not by an earlier process with the same node id).
    pub own: bool,
    /// Other processes apply it too, so it cannot be undone when this process fails to store its writes.
    pub shared: bool,
    /// The caller waiting for its result, when this process appended it.
    pub pending: Option<Box<dyn Pending>>,
}

/// Receives each entry of the log, in order.
pub type Sink = Arc<dyn Fn(Entry) + Send + Sync>;

/// An ordered log of commands.
pub trait Log: Send + Sync + 'static {
    /// The start of the connection ids this process gives out (each node names its own; empty for one process).
    fn conn_prefix(&self) -> &str;

    /// Whether other processes read what is appended: requests are then tried on a copy of the engine before
    /// they are appended (a refused one leaves nothing every node must read), and entries cannot be undone.
    fn shared(&self) -> bool;

    /// Whether this process ends due grace windows at once (the others ask a moment later, if nobody did).
    fn is_primary(&self) -> bool;

    /// Appends a caller's request; its entry comes back to the driver carrying `pending`, answered there.
    fn append(
        &self,
        command: Command,
        pending: Box<dyn Pending>,
    ) -> BoxFuture<'_, Result<(), Error>>;

    /// Appends something that happened, which nobody waits for and which must not be lost (tried until the log
    /// takes it).
    fn append_fact(&self, command: Command);

    /// Waits until this process has applied every entry appended anywhere before the call (bounded).
    fn catch_up(&self) -> BoxFuture<'_, ()>;

    /// Everything up to `pos` is applied and visible here.
    fn set_applied(&self, pos: LogPos);

    /// The part of the log that does not work now, for `/healthz` (`redis`).
    fn failing(&self) -> Option<&'static str>;

    /// What to append when this process shuts down, so the others end its connections.
    fn farewell(&self) -> Option<NodeDown>;
}
