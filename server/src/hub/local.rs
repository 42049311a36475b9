//! The log of a single server: an in-process sequence. An entry is handed to the driver the moment it is
//! appended, applied at the driver's clock, and undone if its writes cannot be stored (nobody else saw it).

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::{self, BoxFuture};

use super::log::{Entry, Log, LogPos, Sink};
use super::pending::Pending;
use crate::error::Error;
use crate::presence::command::{Command, NodeDown};

pub struct LocalLog {
    sink: Sink,
    next: AtomicU64,
}

impl LocalLog {
    pub fn new(sink: Sink) -> LocalLog {
        LocalLog {
            sink,
            next: AtomicU64::new(1),
        }
    }

    fn hand_over(&self, command: Command, pending: Option<Box<dyn Pending>>) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        (self.sink)(Entry {
            pos: LogPos(0, seq),
            now: None,
            command: Some(command),
            own: true,
            shared: false,
            pending,
        });
    }
}

impl Log for LocalLog {
    fn conn_prefix(&self) -> &str {
        ""
    }

    fn shared(&self) -> bool {
        false
    }

    fn is_primary(&self) -> bool {
        true
    }

    fn append(
        &self,
        command: Command,
        pending: Box<dyn Pending>,
    ) -> BoxFuture<'_, Result<(), Error>> {
        self.hand_over(command, Some(pending));
        Box::pin(future::ready(Ok(())))
    }

    fn append_fact(&self, command: Command) {
        self.hand_over(command, None);
    }

    fn catch_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(future::ready(()))
    }

    fn set_applied(&self, _: LogPos) {}

    fn failing(&self) -> Option<&'static str> {
        None
    }

    fn farewell(&self) -> Option<NodeDown> {
        None
    }
}
