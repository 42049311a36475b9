//! Storage behind a trait: the server keeps everything in memory and writes through a [`Store`], which loads a
//! [`Snapshot`] at start and commits batches of [`Stamped`] [`Write`]s, each batch all or nothing and durable once
//! [`Store::commit`] returns. [`sqlite::SqliteStore`] is the embedded default; [`postgres::PostgresStore`] a
//! database several server processes share.

pub mod postgres;
pub mod sqlite;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::model::{AppSettings, ChannelRecord, UserRecord, WebhookEvent, Write};

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<UserRecord>,
    pub channels: Vec<ChannelRecord>,
    pub app: AppSettings,
    /// The webhook events not yet delivered, oldest first.
    pub outbox: Vec<WebhookEvent>,
}

/// A write with the position in the cluster log of the entry that made it. A store the nodes share keeps, for
/// each record, the write of the latest position, whatever order the nodes commit in; a write without a position
/// (no cluster log) applies whatever the record holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub write: Write,
    /// The entry's position: the stream id's milliseconds, then its sequence number.
    pub pos: Option<(u64, u64)>,
}

impl Stamped {
    /// A write made outside the cluster log.
    pub fn unlogged(write: Write) -> Stamped {
        Stamped { write, pos: None }
    }
}

/// Where the server's data lives. Used by one thread (the hub's), which blocks on it.
pub trait Store: Send + 'static {
    /// Applies `writes` in order as one transaction: when this returns `Ok` all of them are durable, after an
    /// `Err` none of them is applied.
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError>;

    /// Whether other server processes write to the same database: then a process must not commit again the
    /// writes another process already committed.
    fn shared(&self) -> bool {
        false
    }

    /// This process's node id in a cluster: the webhook events it commits are its own to deliver (a store the
    /// nodes share records whose they are).
    fn set_node(&mut self, _node: &str) {}

    /// The undelivered webhook events of `node` (a dead node's, or this node's own when it starts), oldest first,
    /// made this node's to deliver. Only a store the nodes share has others' events.
    fn adopt_outbox(&mut self, _node: &str) -> Result<Vec<WebhookEvent>, StoreError> {
        Ok(Vec::new())
    }
}

/// A storage failure.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The database could not be opened or read.
    Open(Arc<dyn StdError + Send + Sync>),
    /// A batch of writes did not commit: the database could not be reached or could not write at all.
    Write(Arc<dyn StdError + Send + Sync>),
    /// The database refused a value of the batch (too large for an index, not storable): the batch did not
    /// commit, but the database works and writes without that value can.
    Refused(Arc<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Whether the failure is the batch's own (a value the database refuses) rather than the database's.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::Refused(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) | StoreError::Write(e) | StoreError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Open(e) | StoreError::Write(e) | StoreError::Refused(e) => Some(e.as_ref()),
        }
    }
}
