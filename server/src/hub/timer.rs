//! The one timer task: sleeps until the engine's next deadline, or until an operation moved it, and then lets
//! the engine handle whatever is due.

use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Something with deadlines: the hub, over its engine.
pub(super) trait Deadlines: Send + Sync + 'static {
    /// When `handle_timeout` next has work.
    fn next_deadline(&self) -> Option<DateTime<Utc>>;
    /// Handles whatever is due now.
    fn handle_timeout(&self);
}

/// Runs until the hub is gone; `wake` is notified whenever the next deadline may have moved.
pub(super) async fn run<D: Deadlines>(hub: Weak<D>, wake: Arc<Notify>) {
    loop {
        // The hub is held only while asking it something, so dropping it ends this task.
        let Some(deadline) = hub.upgrade().map(|h| h.next_deadline()) else {
            return;
        };
        match deadline {
            Some(at) => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => match hub.upgrade() {
                        Some(h) => h.handle_timeout(),
                        None => return,
                    },
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
