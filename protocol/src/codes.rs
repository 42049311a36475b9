//! Numeric constants of the protocol: API error codes, WebSocket close codes, event names and timing defaults.

/// API error codes carried in the error envelope's `code`.
pub mod error_code {
    pub const INTERNAL: i64 = -1;
    pub const ACCESS_KEY: i64 = 2;
    pub const INPUT: i64 = 4;
    pub const AUTHENTICATION: i64 = 5;
    pub const DOES_NOT_EXIST: i64 = 16;
    pub const NOT_ALLOWED: i64 = 17;
    pub const RATE_LIMIT: i64 = 9;
    pub const PAYLOAD_TOO_BIG: i64 = 22;
    pub const TOKEN_EXPIRED: i64 = 40;
    pub const TOKEN_NOT_VALID_YET: i64 = 41;
    pub const TOKEN_USED_BEFORE_ISSUED_AT: i64 = 42;
    pub const TOKEN_SIGNATURE_INVALID: i64 = 43;
    pub const CONNECTION_ID_NOT_FOUND: i64 = 46;
    pub const TOO_MANY_CONNECTIONS: i64 = 71;
}

/// WebSocket close codes and how each side reads them.
pub mod close_code {
    /// A deliberate, permanent close: the client's `disconnectUser()`, or the server rejecting a handshake.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away: browser navigation, server shutdown.
    pub const GOING_AWAY: u16 = 1001;
    /// The server failed (e.g. its database is unwritable); clients retry.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server cannot take the connection now (a refused handshake the client should retry with backoff,
    /// e.g. the per-user connection cap): any code but 1000 makes clients retry.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The application-level "going away" code a page sends itself on `pagehide` (JS may not send 1001).
    /// Servers treat it exactly like 1001: the offline transition waits for the grace window.
    pub const CLIENT_GOING_AWAY: u16 = 4001;
    /// The server closed a connection that stayed silent past the pong timeout.
    pub const PONG_TIMEOUT: u16 = 4002;
    /// The server closed a connection whose consumer could not keep up with its send queue.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The server closed a connection that sent a frame it refuses (binary, not JSON, breaking the protocol).
    pub const BAD_FRAME: u16 = 4004;
    /// The server closed a connection whose client sent no frame of its own (its `health.check`) for the
    /// silence limit, while the browser still answered pings: a frozen tab. Clients reconnect when they run again.
    pub const CLIENT_SILENCE: u16 = 4005;
    /// The server closed a connection that sent a frame or message larger than it accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// Event `type` strings.
pub mod event_type {
    pub const HEALTH_CHECK: &str = "health.check";
    pub const CONNECTION_ERROR: &str = "connection.error";
    pub const CONNECTION_CHANGED: &str = "connection.changed";
    pub const CONNECTION_RECOVERED: &str = "connection.recovered";
    pub const USER_PRESENCE_CHANGED: &str = "user.presence.changed";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_WATCHING_START: &str = "user.watching.start";
    pub const USER_WATCHING_STOP: &str = "user.watching.stop";
    pub const MEMBER_ADDED: &str = "member.added";
    pub const MEMBER_REMOVED: &str = "member.removed";
}

/// Timing defaults, in milliseconds.
pub mod timing {
    /// The client pings this long after the last `health.check` it received.
    pub const CLIENT_PING_INTERVAL_MS: u64 = 25_000;
    /// The client considers its socket dead after this long without any frame.
    pub const CLIENT_DEAD_AFTER_MS: u64 = 35_000;
    /// `connection.changed {online:false}` is emitted this long after the socket became unhealthy.
    pub const OFFLINE_EVENT_DELAY_MS: u64 = 5_000;
    /// `last_active` is refreshed this often while connected.
    pub const LAST_ACTIVE_REFRESH_MS: u64 = 15 * 60 * 1000;
    /// Reconnect backoff ceiling.
    pub const MAX_RECONNECT_DELAY_MS: u64 = 25_000;
}

/// The URL every error envelope points to.
pub const MORE_INFO_URL: &str = "https://getstream.io/chat/docs/api_errors_response";
