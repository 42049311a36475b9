//! The connection state machine of one client: connect, keep-alive, dead-socket detection, reconnect with
//! backoff, page lifecycle, `last_active` refresh, state recovery after a reconnect, and what the client keeps of
//! the users that frames and REST answers carry.
//!
//! Time is an argument (`handle_*(now)`), the next deadline a query ([`Session::poll_timeout`]) and the output a
//! queue of [`Effect`]s. Every deadline is computed from recorded instants, never from counting timer ticks, so
//! throttled timers (background tabs fire at most once a minute) only make the client late, never wrong.

use presence_protocol::codes::{close_code, error_code, event_type};
// The tests build frames from these wire types.
#[cfg(test)]
use presence_protocol::{ApiError, Event};

use crate::core::backoff::Backoff;
use crate::core::config::Config;
pub use crate::core::effect::{Effect, SocketId};
use crate::core::error::{client_code, decimal, ClientError};
use crate::core::frame::{Frame, FrameVerdict, Rejection};
use crate::core::store::{UserPresence, UserStore};
use crate::core::subscriptions::Subscriptions;
use crate::core::time::Millis;
use crate::core::token;
use crate::core::uuid::uuid_v4;
pub use answers::UsersAnswer;
use phase::{Open, Phase};
use reconnect::Reconnect;
use recovery::Recovery;

/// The close code of a shared socket's link whose leader tab left (`src/web/share.js`): client-local, never on the
/// wire. The session reconnects at once.
pub const LEADER_LEFT: u16 = 4100;

/// One client's connection and the state that must survive reconnects.
#[derive(Debug)]
pub struct Session {
    config: Config,
    phase: Phase,
    rng: fastrand::Rng,
    backoff: Backoff,
    user_id: Option<String>,
    client_id: String,
    token_provider: bool,
    /// Set while `connectUser` is pending.
    connect_deadline: Option<Millis>,
    reconnect: Reconnect,
    /// Counts `disconnect` calls: work that awaited something compares it to know its session still exists.
    epoch: u64,
    next_socket: u64,
    users: UserStore,
    subscriptions: Subscriptions,
    recovery: Option<Recovery>,
    recovery_generation: u64,
    /// A FIFO queue; a Vec rather than a VecDeque because it holds a handful of effects at most, and each
    /// collection type adds its own code to the wasm bundle.
    effects: Vec<Effect>,
}

impl Session {
    pub fn new(config: Config, seed: u64) -> Self {
        let backoff = Backoff::new(
            config.backoff_floor,
            config.backoff_base,
            config.backoff_cap,
        );
        Session {
            config,
            phase: Phase::Idle,
            rng: fastrand::Rng::with_seed(seed),
            backoff,
            user_id: None,
            client_id: String::new(),
            token_provider: false,
            connect_deadline: None,
            reconnect: Reconnect::default(),
            epoch: 0,
            next_socket: 0,
            users: UserStore::default(),
            subscriptions: Subscriptions::default(),
            recovery: None,
            recovery_generation: 0,
            effects: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A fresh random UUID from the session's generator.
    pub fn uuid(&mut self) -> String {
        uuid_v4(&mut self.rng)
    }

    /// Starts connecting `user_id`. `token_provider` says whether the token can be asked for again (an expired
    /// token, code 40, then leads to a retry instead of a failure).
    pub fn connect(
        &mut self,
        now: Millis,
        user_id: &str,
        token_provider: bool,
    ) -> Result<(), ClientError> {
        if user_id.is_empty() {
            return Err(ClientError::invalid_argument(
                "connectUser() needs a user with a non-empty id",
            ));
        }
        if self.user_id.is_some() {
            return Err(ClientError::invalid_argument(
                "connectUser() was already called: call disconnectUser() before connecting again",
            ));
        }
        self.user_id = Some(user_id.to_string());
        self.client_id = [user_id, "--", &uuid_v4(&mut self.rng)].concat();
        self.token_provider = token_provider;
        self.connect_deadline = Some(now.saturating_add(self.config.connect_budget));
        self.reconnect.connect_started();
        self.start_attempt(now);
        Ok(())
    }

    /// `disconnectUser()`: closes with 1000 so peers see the user offline at once, forgets the user, the
    /// subscriptions and the cache, and stops every timer.
    pub fn disconnect(&mut self, _now: Millis) {
        if let Some(socket) = self.current_socket() {
            self.effects.push(Effect::CloseSocket {
                socket,
                code: Some(close_code::NORMAL),
                reason: "Manually closed connection by calling client.disconnect()",
            });
        }
        if self.connect_deadline.take().is_some() {
            self.effects.push(Effect::ConnectRejected(ClientError::new(
                client_code::DISCONNECTED,
                "connectUser() was cancelled by disconnectUser()",
            )));
        }
        self.phase = Phase::Idle;
        self.user_id = None;
        self.client_id.clear();
        self.token_provider = false;
        self.reconnect.forget();
        self.users.clear();
        self.subscriptions.clear();
        self.recovery = None;
        self.backoff.reset();
        self.epoch += 1;
    }

    /// Changes with every `disconnect`: an answer or a token awaited under another epoch belongs to a session
    /// that no longer exists and must not land in this one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// An incoming text frame on `socket`, already parsed.
    #[must_use]
    pub fn handle_frame(
        &mut self,
        now: Millis,
        socket: SocketId,
        frame: &Frame<'_>,
    ) -> FrameVerdict {
        match &mut self.phase {
            Phase::Connecting { socket: s, .. } if *s == socket => {
                if let Some(error) = &frame.error {
                    self.handshake_rejected(now, socket, error);
                    return FrameVerdict::Ignore;
                }
                self.phase = Phase::Open(Open {
                    socket,
                    connection_id: frame.connection_id.unwrap_or_default().to_string(),
                    opened_at: now,
                    last_frame: now,
                    last_health: now,
                    ping_sent: None,
                    answered: true,
                    refresh_at: now.saturating_add(self.config.last_active_refresh),
                });
                // The backoff is reset only once this connection has stayed healthy (`retry_later`): a server
                // that accepts and then drops every connection keeps seeing growing delays.
                let reconnected = self.reconnect.opened();
                self.set_healthy();
                let verdict = self.observe_frame_users(frame);
                if self.connect_deadline.take().is_some() {
                    self.effects.push(Effect::ConnectResolved);
                }
                if reconnected {
                    self.start_recovery();
                }
                verdict
            }
            Phase::Open(open) if open.socket == socket => {
                open.last_frame = now;
                open.answered = true;
                if frame.kind == event_type::HEALTH_CHECK {
                    open.last_health = now;
                }
                self.observe_frame_users(frame)
            }
            _ => FrameVerdict::Ignore,
        }
    }

    /// The socket closed (or failed: browsers follow `error` with `close`, so both may be reported).
    pub fn handle_socket_closed(&mut self, now: Millis, socket: SocketId, code: u16) {
        match self.phase {
            Phase::Connecting { socket: s, .. } if s == socket => {
                if code == close_code::NORMAL {
                    // A server closes a handshake with 1000 only to refuse it for good.
                    self.give_up(ClientError::new(
                        client_code::CONNECTION_FAILED,
                        "the server closed the connection during the handshake",
                    ));
                } else {
                    self.diagnose_first_failure();
                    self.retry_later(now, now);
                }
            }
            // Closed for the client's silence (4005): the page was frozen, and it runs again now. No backoff:
            // the server asked for nothing but a sign of life. Nor when the tab that held a shared socket left
            // (`LEADER_LEFT`): another tab holds it, or this one takes it over.
            Phase::Open(ref open)
                if open.socket == socket
                    && (code == close_code::CLIENT_SILENCE || code == LEADER_LEFT) =>
            {
                self.end_cycle_if_healthy(now);
                self.retry_after(now, self.config.wake_retry);
            }
            Phase::Open(ref open) if open.socket == socket => self.retry_later(now, now),
            _ => {}
        }
    }

    /// Asks once per `connectUser` why its first socket failed, while it is still pending.
    fn diagnose_first_failure(&mut self) {
        if self.connect_deadline.is_some() && self.reconnect.diagnose_first_failure() {
            self.effects.push(Effect::Diagnose);
        }
    }

    /// The pending `connectUser` fails with `error` now (no retry can succeed: nothing that speaks the API answers,
    /// or the app's token provider failed). Does nothing once the first connection succeeded or after
    /// `disconnectUser`.
    pub fn fail_connect(&mut self, error: ClientError) {
        if self.connect_deadline.is_some() && !self.reconnect.connected_before() {
            self.give_up(error);
        }
    }

    /// The token for `socket` could not be had: the app's token provider threw, rejected or returned no string.
    /// The first connection fails with that error (code 1006, the provider's own message): no retry can succeed
    /// without the app. A reconnect retries after the backoff, asking the provider again.
    pub fn handle_token_failure(&mut self, now: Millis, socket: SocketId, error: ClientError) {
        if self.current_socket() != Some(socket) {
            return;
        }
        if self.connect_deadline.is_some() && !self.reconnect.connected_before() {
            self.fail_connect(error);
        } else {
            self.retry_later(now, now);
        }
    }

    /// The WebSocket reported an error.
    pub fn handle_socket_error(&mut self, now: Millis, socket: SocketId) {
        if self.current_socket() == Some(socket) {
            if matches!(self.phase, Phase::Connecting { .. }) {
                self.diagnose_first_failure();
            }
            self.retry_later(now, now);
        }
    }

    /// Runs everything due at `now`. Call it when the deadline of [`Session::poll_timeout`] passes (late is fine).
    pub fn handle_timeout(&mut self, now: Millis) {
        if let Some(deadline) = self.connect_deadline {
            if now >= deadline
                && !matches!(self.phase, Phase::Open(_) | Phase::Suspended | Phase::Idle)
            {
                self.give_up(ClientError::new(
                    client_code::CONNECTION_FAILED,
                    "initial WS connection could not be established",
                ));
                return;
            }
        }
        if self.reconnect.offline_event_due(now) {
            self.effects
                .push(Effect::ConnectionChanged { online: false });
        }
        match &mut self.phase {
            Phase::Connecting { deadline, .. } if now >= *deadline => self.retry_later(now, now),
            Phase::Waiting { retry_at } if now >= *retry_at => self.start_attempt(now),
            Phase::Open(open) => {
                if open.dead_at(&self.config).is_some_and(|dead| now >= dead) {
                    let alive_until = open.last_frame;
                    self.retry_later(now, alive_until);
                    return;
                }
                let mut ping = now >= open.next_ping(&self.config);
                if now >= open.refresh_at {
                    open.refresh_at = now.saturating_add(self.config.last_active_refresh);
                    ping = true;
                }
                if ping {
                    open.ping_sent = Some(now);
                    open.answered = false;
                    let socket = open.socket;
                    self.send_ping(socket);
                }
            }
            _ => {}
        }
    }

    /// The browser went online, the page became visible, or `pageshow` fired: retry soon if the socket is down
    /// (once per backoff cycle: a tab flipping visibility or a flapping network cannot turn the backoff into a
    /// storm), probe it if it has been silent. A wake-up during an attempt applies to the wait after it, should
    /// the attempt fail.
    pub fn handle_wake(&mut self, now: Millis) {
        let soon = now.saturating_add(self.config.wake_retry);
        match &mut self.phase {
            Phase::Waiting { retry_at } => {
                if *retry_at > soon && self.reconnect.spend_wake() {
                    *retry_at = soon;
                }
            }
            Phase::Connecting { .. } => self.reconnect.wake_during_attempt(),
            Phase::Suspended => {
                if let Some(deadline) = &mut self.connect_deadline {
                    *deadline = now.saturating_add(self.config.connect_budget);
                }
                self.phase = Phase::Waiting { retry_at: soon };
            }
            Phase::Open(open) => {
                let outstanding = open.dead_at(&self.config).is_some();
                if !outstanding && now.saturating_sub(open.last_frame) >= self.config.ping_interval
                {
                    open.ping_sent = Some(now);
                    open.answered = false;
                    let socket = open.socket;
                    self.send_ping(socket);
                }
            }
            Phase::Idle => {}
        }
    }

    /// The browser reports the network gone (`offline`): the socket cannot be trusted, so it is abandoned and the
    /// connection takes the usual retry path at once instead of waiting for the dead-socket deadline; `online`
    /// then brings the next attempt within `wake_retry`. Peers see nothing unless the outage outlasts the
    /// server's grace window.
    pub fn handle_offline(&mut self, now: Millis) {
        match &self.phase {
            // The socket is known good up to its last frame.
            Phase::Open(open) => {
                let alive_until = open.last_frame;
                self.retry_later(now, alive_until);
            }
            Phase::Connecting { .. } => self.retry_later(now, now),
            _ => {}
        }
    }

    /// `pagehide`: close like a navigation (4001, which the server treats as going away, so its grace window
    /// hides a reload from peers) and stay quiet until the page shows again.
    pub fn handle_page_hide(&mut self, now: Millis) {
        self.end_cycle_if_healthy(now);
        if let Some(socket) = self.current_socket() {
            self.effects.push(Effect::CloseSocket {
                socket,
                code: Some(close_code::CLIENT_GOING_AWAY),
                reason: "page hidden",
            });
        }
        if !matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Suspended;
            self.reconnect.went_down();
            self.recovery = None;
        }
    }

    /// Takes a user the server sent unless it is older than what the cache holds; returns whether it was taken.
    fn observe_user(&mut self, user: &UserPresence) -> bool {
        if self.users.apply_newer(&user.id, &user.state).is_none() {
            return false;
        }
        if let Some(recovery) = &mut self.recovery {
            // What arrives after the recovery requests went out is taken as newer than their answers.
            if !recovery.live.contains(&user.id) {
                recovery.live.push(user.id.clone());
            }
        }
        true
    }

    /// Whether the cache holds `user` as given: after a frame, false for a `me` older than what the cache already
    /// held (the embedding layer then keeps its newer copy too).
    pub fn holds(&self, user: &UserPresence) -> bool {
        self.users.get(&user.id) == Some(&user.state)
    }

    pub fn watch_channel(&mut self, channel_type: &str, id: &str, presence: bool) {
        self.subscriptions.watch_channel(channel_type, id, presence);
    }

    pub fn stop_watching(&mut self, channel_type: &str, id: &str) {
        self.subscriptions.stop_watching(channel_type, id);
    }

    /// Records users as followed without an answer about them (tests of what recovery asks for).
    #[cfg(test)]
    pub(crate) fn follow_users<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        self.subscriptions.follow_users(ids);
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    pub fn users(&self) -> &UserStore {
        &self.users
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The server's id of the open connection.
    pub fn connection_id(&self) -> Option<&str> {
        match &self.phase {
            Phase::Open(open) => Some(&open.connection_id),
            _ => None,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether `connectUser` is still pending.
    pub fn is_connecting(&self) -> bool {
        self.connect_deadline.is_some()
    }

    /// Whether `socket` is the one the session currently uses (for work that awaited something in between).
    pub fn is_current(&self, socket: SocketId) -> bool {
        self.current_socket() == Some(socket)
    }

    /// The earliest deadline, if any; call [`Session::handle_timeout`] once it has passed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        let phase = match &self.phase {
            Phase::Idle | Phase::Suspended => return None,
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Waiting { retry_at } => Some(*retry_at),
            Phase::Open(open) => {
                let ping = open.next_ping(&self.config).min(open.refresh_at);
                Some(
                    open.dead_at(&self.config)
                        .map_or(ping, |dead| dead.min(ping)),
                )
            }
        };
        let connect = self
            .connect_deadline
            .filter(|_| !matches!(self.phase, Phase::Open(_)));
        [phase, connect, self.reconnect.offline_event_at()]
            .into_iter()
            .flatten()
            .min()
    }

    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if self.effects.is_empty() {
            None
        } else {
            Some(self.effects.remove(0))
        }
    }

    fn current_socket(&self) -> Option<SocketId> {
        match &self.phase {
            Phase::Connecting { socket, .. } => Some(*socket),
            Phase::Open(open) => Some(open.socket),
            _ => None,
        }
    }

    fn start_attempt(&mut self, now: Millis) {
        self.next_socket += 1;
        let socket = SocketId(self.next_socket);
        self.phase = Phase::Connecting {
            socket,
            deadline: now.saturating_add(self.config.attempt_timeout),
        };
        self.effects.push(Effect::OpenSocket {
            socket,
            reload_token: self.reconnect.take_reload_token(),
            reconnect: self.reconnect.connected_before(),
        });
    }

    /// The current socket failed or died (an open one was known to work until `alive_until`): abandon it and wait
    /// a backoff delay. A connection that stayed healthy for `healthy_reset` ends the backoff cycle first.
    fn retry_later(&mut self, now: Millis, alive_until: Millis) {
        self.end_cycle_if_healthy(alive_until);
        let mut delay = self.backoff.next_delay(&mut self.rng);
        if self.reconnect.take_pending_wake() {
            delay = delay.min(self.config.wake_retry);
        }
        self.retry_after(now, delay);
    }

    /// Abandons the current socket and waits `delay` before the next attempt.
    fn retry_after(&mut self, now: Millis, delay: Millis) {
        if let Some(socket) = self.current_socket() {
            self.effects.push(Effect::CloseSocket {
                socket,
                code: None,
                reason: "",
            });
        }
        self.set_unhealthy(now);
        self.recovery = None;
        self.phase = Phase::Waiting {
            retry_at: now.saturating_add(delay),
        };
    }

    /// Ends the backoff cycle when the open connection was healthy for `healthy_reset` up to `alive_until`.
    fn end_cycle_if_healthy(&mut self, alive_until: Millis) {
        if let Phase::Open(open) = &self.phase {
            if alive_until.saturating_sub(open.opened_at) >= self.config.healthy_reset {
                self.backoff.reset();
                self.reconnect.cycle_ended();
            }
        }
    }

    fn handshake_rejected(&mut self, now: Millis, socket: SocketId, error: &Rejection) {
        // A reconnect refused for too many connections (code 71) passes once another tab or device of the user
        // closes one: retried with backoff, whatever the close code. `connectUser` itself fails with the code, so
        // the app can tell the user.
        let crowded =
            error.code == error_code::TOO_MANY_CONNECTIONS && self.connect_deadline.is_none();
        let reload = token::reload_cures(error.code, self.token_provider);
        if reload && self.reconnect.reload_after_refusal() {
            // Not a failure of the network: the attempt with a fresh token follows after the floor delay. Only a
            // provider whose fresh token is refused again meets the backoff.
            self.retry_after(now, self.config.backoff_floor);
            return;
        }
        if crowded || reload {
            self.reconnect.reload_next(reload);
            self.retry_later(now, now);
            return;
        }
        self.effects.push(Effect::CloseSocket {
            socket,
            code: None,
            reason: "",
        });
        self.give_up(ClientError {
            code: error.code,
            status: (error.status != 0).then_some(error.status),
            message: [
                "WS failed with code ",
                &decimal(error.code),
                " and reason - ",
                &error.message,
            ]
            .concat(),
        });
    }

    /// Stops trying: fails a pending `connectUser`, or reports the connection down for good.
    fn give_up(&mut self, error: ClientError) {
        if let Some(socket) = self.current_socket() {
            self.effects.push(Effect::CloseSocket {
                socket,
                code: None,
                reason: "",
            });
        }
        self.phase = Phase::Idle;
        self.recovery = None;
        // Down for good, reported here rather than after the offline delay. (Without a pending connect nor an
        // earlier connection the client was never up.)
        self.reconnect.went_down();
        if self.connect_deadline.take().is_some() {
            self.user_id = None;
            self.reconnect.first_connection_failed();
            self.effects.push(Effect::ConnectRejected(error));
        } else if self.reconnect.connected_before() {
            self.effects
                .push(Effect::ConnectionChanged { online: false });
        }
    }

    fn set_healthy(&mut self) {
        if self.reconnect.went_healthy() {
            self.effects
                .push(Effect::ConnectionChanged { online: true });
        }
    }

    fn set_unhealthy(&mut self, now: Millis) {
        self.reconnect
            .went_unhealthy(now, self.config.offline_event_delay);
    }

    fn send_ping(&mut self, socket: SocketId) {
        self.effects.push(Effect::Ping { socket });
    }

    /// Takes the users a frame carries; an event whose `user` is older than the cached state is still dispatched
    /// (listeners hear everything the server said) but leaves the cache alone.
    fn observe_frame_users(&mut self, frame: &Frame<'_>) -> FrameVerdict {
        let mut verdict = FrameVerdict::Dispatch;
        if let Some(user) = &frame.user {
            if !self.observe_user(user) {
                verdict = FrameVerdict::DispatchOutdated;
            }
        }
        if let Some(me) = &frame.me {
            self.observe_user(me);
        }
        verdict
    }
}

#[path = "answers.rs"]
mod answers;
#[path = "phase.rs"]
mod phase;
#[path = "reconnect.rs"]
mod reconnect;
#[path = "recovery.rs"]
mod recovery;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
