//! Target `client_frames`: the client's decoding of WebSocket text frames (`Frame`, `Rejection`, `UserPresence`
//! over the protocol's serde types, as the core's native callers read them) and the session they drive.
//!
//! Input: text lines, each one WebSocket text frame from the server, or a command to the session when it starts
//! with `!`: `!t<ms>` (time passes, timers run), `!p` (time jumps to the next deadline), `!c<code>` (the socket
//! closes), `!e` (socket error), `!w` (wake), `!o` (offline), `!h` (page hidden), `!d` (`disconnectUser`),
//! `!u` / `!U` (`connectUser` with a token provider / a static token), `!a` (a recovery request is answered),
//! `!s` (the next frame arrives on the previous socket). The session starts connecting with a token provider.
//! Properties:
//! - A frame that parses as an event decodes to what the rules say: its type and connection id, the error
//!   envelope's code, status and message, the user of `user.presence.changed` / `user.updated` only, `me` of any
//!   frame; and it re-encodes to JSON that parses back to the same event.
//! - The session never panics; a frame it dispatches leaves the users it carries in the cache as they were sent;
//!   the first frame of a connecting socket opens the connection with that frame's `connection_id` unless it is an
//!   error; a `connectUser` settles (resolved or rejected) at most once, and `disconnectUser` settles it.
//! - After timers ran at `now`, the next deadline is later than `now` (a due timer would spin the browser's loop).

use presence_client::core::{
    Config, Effect, Frame, FrameVerdict, PresenceState, Rejection, Session, SocketId, UserPresence,
    UsersAnswer,
};
use presence_protocol::{Event, User};

const USER_ID: &str = "john";
/// The longest step of the clock one command makes: keeps `now` far from `u64::MAX`, where deadlines saturate.
const MAX_STEP_MS: u64 = 100_000_000;

struct Harness {
    session: Session,
    now: u64,
    current: Option<SocketId>,
    previous: Option<SocketId>,
    /// Recovery requests not answered yet: their generation.
    recovery: Vec<u64>,
    /// Whether a `connectUser` is waiting to be resolved or rejected.
    connect_pending: bool,
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut h = Harness {
        session: Session::new(Config::default(), 7),
        now: 1_000,
        current: None,
        previous: None,
        recovery: Vec::new(),
        connect_pending: false,
    };
    h.connect(true);
    let mut on_previous = false;
    for line in text.split('\n') {
        let Some(command) = line.strip_prefix('!') else {
            let socket = if std::mem::take(&mut on_previous) {
                h.previous
            } else {
                h.current
            };
            if let Some(socket) = socket {
                h.frame(socket, line);
            }
            continue;
        };
        let (name, arg) = command.split_at(command.chars().next().map_or(0, char::len_utf8));
        let now = h.now;
        match name {
            "t" => {
                h.now += arg.parse::<u64>().unwrap_or(1).min(MAX_STEP_MS);
                h.timers();
            }
            "p" => {
                if let Some(at) = h.session.poll_timeout() {
                    h.now = h.now.max(at.min(h.now + MAX_STEP_MS));
                }
                h.timers();
            }
            "c" => {
                if let Some(socket) = h.current {
                    h.session
                        .handle_socket_closed(now, socket, arg.parse().unwrap_or(1006));
                }
            }
            "e" => {
                if let Some(socket) = h.current {
                    h.session.handle_socket_error(now, socket);
                }
            }
            "w" => h.session.handle_wake(now),
            "o" => h.session.handle_offline(now),
            "h" => h.session.handle_page_hide(now),
            "d" => {
                h.session.disconnect(now);
                h.effects();
                assert!(
                    !h.connect_pending,
                    "disconnectUser settles a pending connectUser"
                );
            }
            "u" => h.connect(true),
            "U" => h.connect(false),
            "a" => {
                if let Some(generation) = h.recovery.pop() {
                    h.session
                        .handle_users_answer(UsersAnswer::Recovery { generation }, Vec::new());
                }
            }
            "s" => on_previous = true,
            _ => {}
        }
        h.effects();
    }
}

impl Harness {
    fn connect(&mut self, token_provider: bool) {
        if self
            .session
            .connect(self.now, USER_ID, token_provider)
            .is_ok()
        {
            self.connect_pending = true;
        }
        self.effects();
    }

    fn timers(&mut self) {
        self.session.handle_timeout(self.now);
        if let Some(at) = self.session.poll_timeout() {
            assert!(
                at > self.now,
                "after the timers ran at {}, the next deadline {at} is not due",
                self.now
            );
        }
    }

    fn effects(&mut self) {
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::OpenSocket { socket, .. } => {
                    self.previous = self.current.replace(socket);
                }
                Effect::ConnectResolved | Effect::ConnectRejected(_) => {
                    assert!(
                        std::mem::take(&mut self.connect_pending),
                        "connectUser settles once: {effect:?}"
                    );
                }
                Effect::Resubscribe {
                    generation,
                    requests,
                } => self
                    .recovery
                    .extend(std::iter::repeat_n(generation, requests.len())),
                _ => {}
            }
        }
    }

    fn frame(&mut self, socket: SocketId, text: &str) {
        let Ok(event) = serde_json::from_str::<Event>(text) else {
            return;
        };
        let frame = Frame::from_event(&event);
        assert_decoded(&event, &frame);
        let again = serde_json::to_string(&event).expect("an event serializes");
        let reparsed: Event = serde_json::from_str(&again).expect("a re-encoded event parses");
        assert_eq!(
            reparsed, event,
            "a re-encoded event parses back to itself: {again}"
        );

        let was_connecting = self.session.is_current(socket) && !self.session.is_connected();
        let verdict = self.session.handle_frame(self.now, socket, &frame);
        if verdict == FrameVerdict::Dispatch {
            // `me` is applied after `user`: for the same id, it is what stays, unless it is older than what the
            // cache held (then the cache keeps the newer state, and the client writes nothing of it).
            let mut cached: Vec<&UserPresence> = frame.user.iter().collect();
            if let Some(me) = &frame.me {
                cached.retain(|user| user.id != me.id);
                if self.session.holds(me) {
                    cached.push(me);
                } else {
                    let held = self
                        .session
                        .users()
                        .get(&me.id)
                        .expect("a user seen is cached");
                    assert!(
                        me.state.is_older_than(held),
                        "a `me` the cache did not take is older than what it holds: {me:?} vs {held:?}"
                    );
                }
            }
            for user in cached {
                assert_eq!(
                    self.session.users().get(&user.id),
                    Some(&user.state),
                    "a dispatched frame's user is cached as sent"
                );
            }
            if was_connecting {
                assert!(
                    self.session.is_connected(),
                    "a first frame opens the connection"
                );
                assert_eq!(
                    self.session.connection_id(),
                    Some(frame.connection_id.unwrap_or_default())
                );
            }
        }
        if was_connecting && frame.error.is_some() {
            assert_eq!(
                verdict,
                FrameVerdict::Ignore,
                "a handshake error is not dispatched"
            );
            assert!(
                !self.session.is_connected(),
                "a handshake error does not connect"
            );
        }
        self.effects();
    }
}

/// The decoding rules, stated on the event's fields.
fn assert_decoded(event: &Event, frame: &Frame<'_>) {
    assert_eq!(frame.kind, event.kind);
    assert_eq!(frame.connection_id, event.connection_id.as_deref());
    let error = event.error.as_ref().map(|e| Rejection {
        code: e.code,
        status: e.status_code,
        message: e.message.clone(),
    });
    assert_eq!(frame.error, error, "the error envelope is read as sent");
    let carries_user = event.kind == "user.presence.changed" || event.kind == "user.updated";
    let user = event
        .user
        .as_ref()
        .filter(|_| carries_user)
        .map(presence_of)
        .map(|mut user| {
            // A user with no time of its own is dated by the event.
            if user.state.since.is_none() {
                user.state.since = event.created_at.as_deref().and_then(stamp);
            }
            user
        });
    assert_eq!(
        frame.user, user,
        "only presence and update events carry their user"
    );
    assert_eq!(
        frame.me,
        event.me.as_ref().map(presence_of),
        "me is read from any frame"
    );
}

fn presence_of(user: &User) -> UserPresence {
    UserPresence {
        id: user.id.clone(),
        state: PresenceState {
            online: user.online,
            status: user
                .custom
                .get("status")
                .and_then(|s| s.as_str())
                .map(str::to_string),
            last_active: user.last_active.clone(),
            since: user
                .last_active
                .as_deref()
                .and_then(stamp)
                .or_else(|| user.updated_at.as_deref().and_then(stamp)),
        },
    }
}

/// An RFC 3339 time, to the microsecond.
fn stamp(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|at| chrono::DateTime::from_timestamp_micros(at.timestamp_micros()))
}
