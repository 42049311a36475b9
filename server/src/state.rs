//! What every handler shares: the settings the edge needs, the token verifier, the hub, the pace of user writes,
//! and the edge's own counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admission::Admission;
use crate::auth::TokenVerifier;
use crate::http::rate::WriteLimits;
use crate::hub::Hub;
use crate::webhook::WebhookStats;

pub struct AppState {
    /// Requests must carry it as `api_key`.
    pub api_key: String,
    pub verifier: TokenVerifier,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// A connection whose client sends no text frame (its `health.check`) for this long is closed with 4005;
    /// `None`: never.
    pub client_silence: Option<Duration>,
    /// Bytes of frames a connection may have queued.
    pub send_queue_bytes: usize,
    pub hub: Arc<Hub>,
    /// The pace of WebSocket connects (paced only while a readmission after the start is under way).
    pub admission: Admission,
    /// The pace of each user token's user writes.
    pub write_limits: WriteLimits,
    /// What webhook delivery did so far.
    pub webhooks: Arc<WebhookStats>,
    /// The event types sent to webhooks.
    pub webhook_events: Vec<String>,
    auth_failures: AtomicU64,
    paced_connects: AtomicU64,
}

impl AppState {
    pub fn new(
        api_key: String,
        verifier: TokenVerifier,
        ping_interval: Duration,
        pong_timeout: Duration,
        send_queue_bytes: usize,
        hub: Arc<Hub>,
        admission: Admission,
    ) -> Self {
        AppState {
            api_key,
            verifier,
            ping_interval,
            pong_timeout,
            client_silence: None,
            send_queue_bytes,
            hub,
            admission,
            write_limits: WriteLimits::new(0, 1),
            webhooks: Arc::default(),
            webhook_events: Vec::new(),
            auth_failures: AtomicU64::new(0),
            paced_connects: AtomicU64::new(0),
        }
    }

    /// The state with connections closed after `silence` without a frame from their client (without it, never).
    pub fn with_client_silence(mut self, silence: Option<Duration>) -> Self {
        self.client_silence = silence;
        self
    }

    /// The state with the event types webhooks get (shown by `GET /app`).
    pub fn with_webhook_events(mut self, events: Vec<String>) -> Self {
        self.webhook_events = events;
        self
    }

    /// The state with user writes paced by `write_limits` (without it, they are not paced).
    pub fn with_write_limits(mut self, write_limits: WriteLimits) -> Self {
        self.write_limits = write_limits;
        self
    }

    /// Counts rejected credentials, REST and WebSocket.
    pub fn count_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// Counts WebSocket connects refused to pace a readmission.
    pub fn count_paced_connect(&self) {
        self.paced_connects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn paced_connects(&self) -> u64 {
        self.paced_connects.load(Ordering::Relaxed)
    }
}
