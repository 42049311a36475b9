//! Storage behind a trait: the server keeps everything in memory and writes through a [`Store`], which loads a
//! [`Snapshot`] at start, applies [`Write`]s in order and says when they are durable. [`sqlite::SqliteStore`] is
//! the embedded default.

pub mod sqlite;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::model::{ChannelRecord, UserRecord, Write};

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<UserRecord>,
    pub channels: Vec<ChannelRecord>,
}

/// Resolves when the writes queued before it are durable.
pub type Flushed = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// Where the server's data lives.
pub trait Store: Send + Sync + 'static {
    /// Queues writes; they are applied in the order given, after every write queued before them. Never blocks.
    fn write(&self, writes: Vec<Write>);
    /// Resolves once everything queued so far is durable (or failed).
    fn flush(&self) -> Flushed;
}

/// A storage failure.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The database could not be opened or read.
    Open(Arc<dyn StdError + Send + Sync>),
    /// A batch of writes did not commit.
    Write(Arc<dyn StdError + Send + Sync>),
    /// The writer has stopped; nothing more is written.
    Stopped,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) | StoreError::Write(e) => write!(f, "{e}"),
            StoreError::Stopped => f.write_str("the database writer stopped"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Open(e) | StoreError::Write(e) => Some(e.as_ref()),
            StoreError::Stopped => None,
        }
    }
}
