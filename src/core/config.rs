//! The session's timing: how often it pings, when it gives a socket up, how it backs off. Defaults follow the
//! protocol; the app may change the `last_active` refresh and the connect budget.

use presence_protocol::codes::timing;

use crate::core::time::Millis;

/// Timing of the session; defaults follow the protocol.
#[derive(Debug, Clone)]
pub struct Config {
    /// A ping goes out this long after the last `health.check` received (or the last ping sent).
    pub ping_interval: Millis,
    /// A socket that answers nothing this long after a ping is dead (25 s + 10 s = the protocol's 35 s).
    pub pong_timeout: Millis,
    /// `connection.changed {online:false}` waits this long, and is dropped if the socket recovered meanwhile.
    pub offline_event_delay: Millis,
    /// While connected, `last_active` is refreshed this often.
    pub last_active_refresh: Millis,
    /// One connection attempt must produce its first frame within this.
    pub attempt_timeout: Millis,
    /// `connectUser` gives up when no attempt succeeded within this.
    pub connect_budget: Millis,
    /// Delay of the retry triggered by the browser going online or the page coming back (once per backoff cycle).
    pub wake_retry: Millis,
    /// No reconnect comes sooner than this after a failure.
    pub backoff_floor: Millis,
    /// The ceiling of the first reconnect delay; it doubles with each consecutive failure up to `backoff_cap`.
    pub backoff_base: Millis,
    pub backoff_cap: Millis,
    /// A connection that stayed healthy this long ends the backoff cycle: the next drop starts from the first delay.
    pub healthy_reset: Millis,
    /// Tabs of one browser connected as the same user to the same server share one socket (`shareConnection`).
    pub share_connection: bool,
    /// The batching window asked of the server (`batchMs`, `batch_ms` on the wire): frames may then hold the
    /// events of up to this many milliseconds. 0: one event per frame.
    pub batch_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: timing::CLIENT_PING_INTERVAL_MS,
            pong_timeout: timing::CLIENT_DEAD_AFTER_MS - timing::CLIENT_PING_INTERVAL_MS,
            offline_event_delay: timing::OFFLINE_EVENT_DELAY_MS,
            last_active_refresh: timing::LAST_ACTIVE_REFRESH_MS,
            attempt_timeout: 10_000,
            connect_budget: 15_000,
            wake_retry: 10,
            // The reference SDK's first delay is drawn from 250-2,500 ms and its delays never exceed 25 s.
            backoff_floor: 250,
            backoff_base: 2_500,
            backoff_cap: timing::MAX_RECONNECT_DELAY_MS,
            healthy_reset: 30_000,
            share_connection: true,
            batch_ms: 10,
        }
    }
}
