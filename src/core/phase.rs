//! The phases of a [`Session`](super::Session)'s connection, and what it records about an open socket.

use crate::core::config::Config;
use crate::core::effect::SocketId;
use crate::core::time::Millis;

#[derive(Debug)]
pub(super) enum Phase {
    /// No user, or given up.
    Idle,
    /// A socket is opening; it must produce its first frame by `deadline`.
    Connecting {
        socket: SocketId,
        deadline: Millis,
    },
    Open(Open),
    /// Between attempts.
    Waiting {
        retry_at: Millis,
    },
    /// The page was hidden (`pagehide`): no socket, no timers, until the page shows again.
    Suspended,
}

#[derive(Debug)]
pub(super) struct Open {
    pub(super) socket: SocketId,
    pub(super) connection_id: String,
    /// When the first frame arrived.
    pub(super) opened_at: Millis,
    pub(super) last_frame: Millis,
    pub(super) last_health: Millis,
    /// The last ping sent, if any.
    pub(super) ping_sent: Option<Millis>,
    /// Whether a frame arrived since that ping.
    pub(super) answered: bool,
    pub(super) refresh_at: Millis,
}

impl Open {
    pub(super) fn next_ping(&self, config: &Config) -> Millis {
        self.last_health
            .max(self.ping_sent.unwrap_or(0))
            .saturating_add(config.ping_interval)
    }

    /// When the socket counts as dead: a ping nothing has answered since.
    pub(super) fn dead_at(&self, config: &Config) -> Option<Millis> {
        self.ping_sent
            .filter(|_| !self.answered)
            .map(|sent| sent.saturating_add(config.pong_timeout))
    }
}
