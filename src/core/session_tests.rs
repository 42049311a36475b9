//! Session behaviour under a manual clock and seeded randomness.

use super::*;
use crate::core::subscriptions::{self, Subscription};
use crate::core::PresenceState;

const USER: &str = "john";

/// A session plus a manual clock, and the test side of the socket.
struct Harness {
    session: Session,
    now: Millis,
    /// The socket the session opened and nobody closed yet: set by `OpenSocket`, cleared by a `CloseSocket` of
    /// that socket or by [`Harness::close`].
    socket: Option<SocketId>,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness::with_seed(config, 0x5eed)
    }

    fn with_seed(config: Config, seed: u64) -> Self {
        Harness {
            session: Session::new(config, seed),
            now: 1_000_000,
            socket: None,
            effects: Vec::new(),
        }
    }

    /// A REST answer's users, and what the session made of them.
    fn answer(&mut self, answer: UsersAnswer, users: Vec<UserPresence>) -> Vec<Effect> {
        self.session.handle_users_answer(answer, users);
        self.drain()
    }

    /// Users of a `queryUsers` made without presence.
    fn listed(&mut self, users: Vec<UserPresence>) -> Vec<Effect> {
        self.answer(UsersAnswer::Listed { follow: false }, users)
    }

    fn drain(&mut self) -> Vec<Effect> {
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::OpenSocket { socket, .. } => self.socket = Some(socket),
                Effect::CloseSocket { socket, .. } if self.socket == Some(socket) => {
                    self.socket = None;
                }
                _ => {}
            }
            self.effects.push(effect);
        }
        std::mem::take(&mut self.effects)
    }

    /// Moves the clock to `until`, firing every deadline on the way exactly when it is due.
    fn advance_to(&mut self, until: Millis) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(deadline) = self.session.poll_timeout() {
            if deadline > until {
                break;
            }
            self.now = self.now.max(deadline);
            self.session.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }

    fn advance(&mut self, by: Millis) -> Vec<Effect> {
        self.advance_to(self.now + by)
    }

    fn frame(&mut self, frame: Frame<'_>) -> (FrameVerdict, Vec<Effect>) {
        let socket = self.socket.expect("a socket");
        let verdict = self.session.handle_frame(self.now, socket, &frame);
        (verdict, self.drain())
    }

    fn health(&mut self, connection_id: &str) -> (FrameVerdict, Vec<Effect>) {
        self.frame(Frame {
            kind: "health.check",
            connection_id: Some(connection_id),
            ..Frame::default()
        })
    }

    fn connect(&mut self) -> Vec<Effect> {
        self.session.connect(self.now, USER, false).unwrap();
        let mut effects = self.drain();
        effects.extend(self.health("conn-1").1);
        effects
    }

    /// The open socket closes with `code` (the server or the network closed it).
    fn close(&mut self, code: u16) -> Vec<Effect> {
        let socket = self.socket.take().expect("a socket");
        self.session.handle_socket_closed(self.now, socket, code);
        self.drain()
    }

    /// Drops the socket and fires deadlines until a new socket is asked for.
    fn reconnect(&mut self, connection_id: &str) -> Vec<Effect> {
        let mut effects = self.close(1006);
        while self.socket.is_none() {
            let deadline = self.session.poll_timeout().expect("a retry is scheduled");
            effects.extend(self.advance_to(deadline));
        }
        effects.extend(self.health(connection_id).1);
        effects
    }
}

fn sends(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Ping { .. }))
        .count()
}

fn presence(id: &str, online: bool, status: &str) -> UserPresence {
    presence_at(id, online, status, "2026-01-01T00:00:00Z")
}

/// A user as an answer or event carries it, `last_active` at `at` (RFC 3339).
fn presence_at(id: &str, online: bool, status: &str, at: &str) -> UserPresence {
    UserPresence {
        id: id.to_string(),
        state: PresenceState {
            online,
            status: Some(status.to_string()),
            last_active: Some(at.to_string()),
            since: crate::core::store::parse_stamp(at),
        },
    }
}

fn no_pings() -> Config {
    Config {
        ping_interval: 10 * 60 * 60 * 1000,
        ..Config::default()
    }
}

#[test]
fn first_frame_opens_the_connection_in_the_documented_order() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    let effects = h.drain();
    assert!(matches!(
        effects[..],
        [Effect::OpenSocket {
            reload_token: false,
            ..
        }]
    ));
    let (verdict, effects) = h.health("conn-1");
    assert_eq!(verdict, FrameVerdict::Dispatch);
    assert_eq!(
        effects,
        [
            Effect::ConnectionChanged { online: true },
            Effect::ConnectResolved
        ]
    );
    assert_eq!(h.session.connection_id(), Some("conn-1"));
    assert!(h.session.client_id().starts_with("john--"));
}

#[test]
fn pings_go_out_25s_after_the_last_health_check_on_the_current_socket() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let start = h.now;
    let effects = h.advance(24_999);
    assert_eq!(sends(&effects), 0);
    let effects = h.advance(1);
    assert_eq!(
        effects,
        [Effect::Ping {
            socket: h.socket.unwrap()
        }]
    );
    assert_eq!(h.now - start, 25_000);
    // The reply re-arms the next ping 25 s later.
    h.advance(100);
    h.health("conn-1");
    let reply_at = h.now;
    let effects = h.advance(25_000);
    assert_eq!(sends(&effects), 1);
    assert_eq!(h.now - reply_at, 25_000);
}

#[test]
fn last_active_refresh_fires_every_15_minutes_while_connected() {
    let mut h = Harness::new(no_pings());
    h.connect();
    let start = h.now;
    let mut sent_at = Vec::new();
    for _ in 0..4 {
        let deadline = h.session.poll_timeout().unwrap();
        let effects = h.advance_to(deadline);
        if sends(&effects) == 1 {
            sent_at.push(h.now - start);
            // The server answers each refresh with a health.check carrying the fresh `me`.
            let me = presence(USER, true, "here");
            h.frame(Frame {
                kind: "health.check",
                connection_id: Some("conn-1"),
                me: Some(me),
                ..Frame::default()
            });
        }
    }
    assert_eq!(sent_at, [900_000, 1_800_000, 2_700_000, 3_600_000]);
    assert_eq!(h.session.users().get(USER).map(|s| s.online), Some(true));
}

#[test]
fn the_refresh_interval_is_configurable() {
    let mut h = Harness::new(Config {
        last_active_refresh: 50,
        ..no_pings()
    });
    h.connect();
    let mut count = 0;
    for _ in 0..10 {
        let effects = h.advance(50);
        count += sends(&effects);
        h.health("conn-1");
    }
    assert_eq!(count, 10);
}

#[test]
fn a_refresh_after_reconnect_counts_from_the_new_connection() {
    let mut h = Harness::new(no_pings());
    h.connect();
    h.advance(600_000);
    h.reconnect("conn-2");
    let opened = h.now;
    let mut effects = Vec::new();
    while sends(&effects) == 0 {
        effects = h.advance_to(h.session.poll_timeout().unwrap());
    }
    assert_eq!(h.now - opened, 900_000);
}

#[test]
fn an_unanswered_ping_marks_the_socket_dead_35s_after_the_last_frame() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let last_frame = h.now;
    let effects = h.advance(34_999);
    assert_eq!(sends(&effects), 1, "the ping at 25 s");
    assert!(h.session.is_connected());
    let effects = h.advance(1);
    assert!(!h.session.is_connected());
    assert_eq!(h.now - last_frame, 35_000);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::CloseSocket { code: None, .. })),
        "the dead socket is abandoned: {effects:?}"
    );
    // connection.changed {online:false} only 5 s after becoming unhealthy, if still down.
    let mut effects = Vec::new();
    let dead_at = h.now;
    while !effects.contains(&Effect::ConnectionChanged { online: false }) {
        effects = h.advance_to(h.session.poll_timeout().unwrap());
    }
    assert_eq!(h.now - dead_at, 5_000);
}

#[test]
fn any_frame_after_the_ping_keeps_the_socket_alive() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.advance(30_000);
    h.frame(Frame {
        kind: "user.presence.changed",
        user: Some(presence("jack", true, "")),
        ..Frame::default()
    });
    h.advance(9_000);
    assert!(h.session.is_connected());
}

#[test]
fn throttled_timers_make_pings_late_but_never_kill_a_live_socket() {
    // A background tab: timers fire once a minute at best, frames still arrive at once.
    let mut h = Harness::new(Config::default());
    h.connect();
    let socket = h.socket.expect("a socket");
    for minute in 1..=30 {
        h.now += 60_000;
        h.session.handle_timeout(h.now);
        let effects = h.drain();
        assert!(
            h.session.is_connected(),
            "minute {minute}: a late timer is not a dead socket"
        );
        // Each late wake is more than 25 s after the last health check: it probes the socket.
        assert_eq!(effects, [Effect::Ping { socket }], "minute {minute}");
        h.now += 20;
        h.health("conn-1");
    }
    assert_eq!(h.session.connection_id(), Some("conn-1"));
}

#[test]
fn a_throttled_tab_with_a_dead_socket_is_detected_at_the_next_wake() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.now += 60_000;
    h.session.handle_timeout(h.now);
    assert_eq!(sends(&h.drain()), 1);
    h.now += 60_000;
    h.session.handle_timeout(h.now);
    h.drain();
    assert!(!h.session.is_connected());
}

impl Harness {
    /// After a failure: fires deadlines until the next attempt opens a socket; returns how long that took.
    fn wait_for_attempt(&mut self) -> Millis {
        assert!(self.socket.is_none(), "wait_for_attempt follows a failure");
        let failed_at = self.now;
        while self.socket.is_none() {
            let deadline = self.session.poll_timeout().expect("a retry is scheduled");
            self.advance_to(deadline);
        }
        self.now - failed_at
    }
}

impl Harness {
    /// Keeps the open connection healthy for `ms`: every ping is answered at once.
    fn stay_healthy(&mut self, ms: Millis, connection_id: &str) {
        let until = self.now + ms;
        while let Some(deadline) = self.session.poll_timeout().filter(|d| *d <= until) {
            let effects = self.advance_to(deadline);
            if sends(&effects) > 0 {
                self.health(connection_id);
            }
        }
        self.now = until;
    }
}

#[test]
fn closed_for_client_silence_or_a_leaving_leader_the_client_reconnects_at_once_without_backoff() {
    // A frozen tab's socket closed by the server (4005): the page runs again, so it reconnects within the wake
    // delay, after a short connection as after a long one; any other close waits for the backoff.
    // So does a shared socket's link whose leader tab left (LEADER_LEFT): another tab holds the socket now.
    for code in [
        close_code::CLIENT_SILENCE,
        crate::core::session::LEADER_LEFT,
    ] {
        for healthy in [1_000, 60_000] {
            let mut h = Harness::new(no_pings());
            h.connect();
            h.stay_healthy(healthy, "conn-1");
            h.close(code);
            let delay = h.wait_for_attempt();
            assert!(
                delay <= Config::default().wake_retry,
                "{code} after {healthy} ms: next attempt after {delay} ms"
            );
        }
    }
    let delays: Vec<Millis> = (0..20)
        .map(|seed| {
            let mut h = Harness::with_seed(no_pings(), seed);
            h.connect();
            h.stay_healthy(1_000, "conn-1");
            h.close(close_code::PONG_TIMEOUT);
            h.wait_for_attempt()
        })
        .collect();
    assert!(
        delays.iter().all(|d| *d >= Config::default().backoff_floor),
        "{delays:?}"
    );
}

#[test]
fn reconnect_delays_grow_within_bounds_and_reset_after_a_healthy_connection() {
    // Full jitter above a floor: the n-th consecutive delay is uniform in [250 ms, min(25 s, 2.5 s * 2^n)]. Across
    // many seeds, each step stays within its bounds, comes close to both, and averages the middle: delays that
    // stayed small (a reconnect storm) or stopped growing fail here as surely as delays out of bounds.
    const SEEDS: u64 = 200;
    let config = Config::default();
    let floor = config.backoff_floor;
    let mut ceilings = vec![2_500, 5_000, 10_000, 20_000];
    // Stays capped, and never gives up.
    ceilings.extend([25_000; 30]);
    // A connection healthy for 30 s resets the backoff: the first delay after it is again under 2.5 s.
    ceilings.push(2_500);
    let reset_step = ceilings.len() - 1;
    let mut delays = vec![Vec::new(); ceilings.len()];
    for seed in 0..SEEDS {
        let mut h = Harness::with_seed(config.clone(), seed);
        h.connect();
        h.close(1006);
        for (step, got) in delays.iter_mut().enumerate() {
            if step == reset_step {
                h.health("conn-2");
                h.stay_healthy(config.healthy_reset, "conn-2");
                h.close(1006);
            }
            got.push(h.wait_for_attempt());
            if step != reset_step - 1 {
                h.close(1006);
            }
        }
    }
    for (step, (ceiling, got)) in ceilings.iter().zip(&delays).enumerate() {
        let max = got.iter().copied().max().unwrap_or_default();
        let min = got.iter().copied().min().unwrap_or_default();
        let mean = got.iter().sum::<Millis>() / SEEDS;
        let middle = (floor + ceiling) / 2;
        assert!(
            (floor..=*ceiling).contains(&min) && max <= *ceiling,
            "step {step}: delays {min}..{max} ms are not within [{floor}, {ceiling}] ms"
        );
        assert!(
            max >= ceiling * 9 / 10 && min <= floor + ceiling / 10,
            "step {step}: the delays {min}..{max} ms do not cover [{floor}, {ceiling}] ms"
        );
        assert!(
            mean.abs_diff(middle) <= ceiling / 10,
            "step {step}: the mean delay {mean} ms is not about {middle} ms"
        );
    }
}

#[test]
fn a_server_that_accepts_then_drops_every_connection_sees_growing_delays() {
    // Each connection gets its first frame and lives 5 s (well under the 30 s that count as healthy), then the
    // server drops it: the delay before each reconnect keeps growing up to the cap instead of starting over.
    const SEEDS: u64 = 200;
    const DROPS: usize = 8;
    let config = Config::default();
    let mut means = vec![0; DROPS];
    for seed in 0..SEEDS {
        let mut h = Harness::with_seed(config.clone(), seed);
        h.connect();
        for (drop, mean) in means.iter_mut().enumerate() {
            h.stay_healthy(5_000, "conn");
            h.close(1011);
            *mean += h.wait_for_attempt() / SEEDS;
            h.health(&format!("conn-{drop}"));
        }
    }
    eprintln!("mean delay before each reconnect (ms): {means:?}");
    let cap_middle = (config.backoff_floor + config.backoff_cap) / 2;
    for step in 1..DROPS {
        let ceiling = (config.backoff_base << step).min(config.backoff_cap);
        let middle = (config.backoff_floor + ceiling) / 2;
        assert!(
            means[step].abs_diff(middle) <= ceiling / 10,
            "reconnect {step}: mean delay {} ms, not about {middle} ms: {means:?}",
            means[step]
        );
    }
    assert!(means[DROPS - 1].abs_diff(cap_middle) <= config.backoff_cap / 10);
}

/// The per-second histogram of when 1,000 clients dropped together (a server restart) make their first
/// reconnect attempt, printed with `cargo test -- --nocapture`.
#[test]
fn a_thousand_clients_dropped_together_spread_their_first_reconnects_over_the_backoff_window() {
    const CLIENTS: u64 = 1_000;
    let config = Config::default();
    let mut first = Vec::new();
    for seed in 0..CLIENTS {
        let mut h = Harness::with_seed(config.clone(), seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        h.connect();
        h.close(1012);
        first.push(h.wait_for_attempt());
    }
    let (floor, ceiling) = (config.backoff_floor, config.backoff_base);
    let seconds = usize::try_from(ceiling / 1_000 + 1).unwrap();
    let mut histogram = vec![0u64; seconds];
    for at in &first {
        histogram[usize::try_from(at / 1_000).unwrap()] += 1;
    }
    eprintln!("first reconnect of {CLIENTS} clients dropped at 0 s, per second:");
    for (second, count) in histogram.iter().enumerate() {
        eprintln!(
            "  {second}-{} s: {count:4} {}",
            second + 1,
            "#".repeat(usize::try_from(count / 10).unwrap())
        );
    }
    // Each attempt is uniform in [floor, ceiling]: second s holds the share of that window it overlaps. The window
    // must spread the herd (no second's share above half), and each second's count must match its share within
    // five standard deviations of a binomial count (a chance failure below one in a million).
    let window = (ceiling - floor) as f64;
    let n = CLIENTS as f64;
    for (second, count) in histogram.iter().enumerate() {
        let lo = (second as u64 * 1_000).max(floor);
        let hi = ((second as u64 + 1) * 1_000).min(ceiling);
        let p = hi.saturating_sub(lo) as f64 / window;
        assert!(
            p <= 0.5,
            "the first backoff window [{floor}, {ceiling}] ms puts {:.0}% of the herd into second {second}",
            p * 100.0
        );
        let slack = 5.0 * (p * (1.0 - p) / n).sqrt();
        let share = *count as f64 / n;
        assert!(
            (share - p).abs() <= slack,
            "second {second} holds {:.1}% of the first reconnects, expected {:.1}% ± {:.1}%: {histogram:?}",
            share * 100.0,
            p * 100.0,
            slack * 100.0
        );
    }
    assert!(
        first.iter().all(|at| (floor..=ceiling).contains(at)),
        "a first reconnect outside [{floor}, {ceiling}] ms"
    );
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let schedule = || {
        let mut h = Harness::new(Config::default());
        h.connect();
        h.close(1006);
        let mut delays = Vec::new();
        for _ in 0..6 {
            delays.push(h.wait_for_attempt());
            h.close(1006);
        }
        delays
    };
    assert_eq!(schedule(), schedule());
}

/// The browser's `online`, `visibilitychange` and `pageshow` events all end up here; `tests/browser.rs` dispatches
/// them in Chromium.
#[test]
fn a_wake_brings_the_next_attempt_within_100ms_instead_of_the_backoff_delay() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.close(1006);
    // Grow the backoff until the scheduled retry is more than a second away.
    for _ in 0..10 {
        h.wait_for_attempt();
        h.close(1006);
    }
    while h.session.poll_timeout().unwrap() - h.now <= 1_000 {
        h.wait_for_attempt();
        h.close(1006);
    }
    h.session.handle_wake(h.now);
    let at = h.session.poll_timeout().unwrap();
    assert!(at - h.now <= 100, "retry in {} ms", at - h.now);
    let effects = h.advance_to(at);
    assert!(matches!(effects.last(), Some(Effect::OpenSocket { .. })));
}

#[test]
fn going_offline_abandons_the_socket_and_online_retries_at_once() {
    let mut h = Harness::new(Config::default());
    h.session.handle_offline(h.now);
    assert!(
        h.drain().is_empty(),
        "offline before connecting does nothing"
    );
    h.connect();
    let old = h.socket.expect("a socket");
    h.session.handle_offline(h.now);
    let effects = h.drain();
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::CloseSocket { socket, code: None, .. } if *socket == old
        )),
        "the socket is abandoned without a close code: {effects:?}"
    );
    assert!(!h.session.is_connected());
    // Attempts made while the network is gone fail at once; the backoff grows.
    for _ in 0..8 {
        h.wait_for_attempt();
        let socket = h.socket.expect("an attempt");
        h.session.handle_socket_error(h.now, socket);
        h.drain();
    }
    // The network is back: the next attempt comes within 100 ms, not at the end of the backoff.
    h.session.handle_wake(h.now);
    let at = h.session.poll_timeout().unwrap();
    assert!(at - h.now <= 100, "retry in {} ms", at - h.now);
    let effects = h.advance_to(at);
    assert!(matches!(effects.last(), Some(Effect::OpenSocket { .. })));
}

#[test]
fn pagehide_closes_with_4001_and_stops_timers_until_pageshow() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.session.handle_page_hide(h.now);
    let effects = h.drain();
    assert!(matches!(
        effects[..],
        [Effect::CloseSocket {
            code: Some(4001),
            ..
        }]
    ));
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "no timers keep a hidden page busy"
    );
    h.session.handle_wake(h.now);
    let at = h.session.poll_timeout().unwrap();
    assert!(at - h.now <= 100);
    let effects = h.advance_to(at);
    assert!(matches!(effects.last(), Some(Effect::OpenSocket { .. })));
    let (_, effects) = h.health("conn-2");
    assert!(effects.contains(&Effect::ConnectionRecovered));
}

#[test]
fn disconnect_closes_with_1000_and_stops_everything() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let old = h.socket.expect("a socket");
    h.session.watch_channel("messaging", "general", true);
    h.session.disconnect(h.now);
    let effects = h.drain();
    assert!(matches!(
        effects[..],
        [Effect::CloseSocket {
            code: Some(1000),
            ..
        }]
    ));
    assert_eq!(h.session.poll_timeout(), None);
    assert!(h.session.subscriptions().is_empty());
    assert!(h.session.user_id().is_none());
    assert_eq!(h.socket, None, "the socket was closed");
    // Nothing happens afterwards, whatever arrives on the old socket.
    h.now += 3_600_000;
    h.session.handle_timeout(h.now);
    h.session.handle_wake(h.now);
    let late = Frame {
        kind: "health.check",
        connection_id: Some("late"),
        ..Frame::default()
    };
    assert_eq!(
        h.session.handle_frame(h.now, old, &late),
        FrameVerdict::Ignore
    );
    h.session.handle_socket_closed(h.now, old, 1006);
    assert!(h.drain().is_empty());
    assert_eq!(h.session.poll_timeout(), None);
    // And connecting again works.
    let effects = h.connect();
    assert!(effects.contains(&Effect::ConnectResolved));
}

#[test]
fn disconnect_during_connect_rejects_the_pending_connect() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    h.drain();
    h.session.disconnect(h.now);
    let effects = h.drain();
    assert!(effects.iter().any(
        |e| matches!(e, Effect::ConnectRejected(err) if err.code == client_code::DISCONNECTED)
    ));
}

#[test]
fn the_initial_connect_gives_up_after_its_budget() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    h.drain();
    let start = h.now;
    let mut effects = Vec::new();
    while !effects
        .iter()
        .any(|e| matches!(e, Effect::ConnectRejected(_)))
    {
        if h.session.poll_timeout().is_none() {
            break;
        }
        h.close(1006);
        effects = h.advance_to(h.session.poll_timeout().unwrap());
    }
    let Some(Effect::ConnectRejected(error)) = effects
        .iter()
        .find(|e| matches!(e, Effect::ConnectRejected(_)))
    else {
        panic!("connect never gave up");
    };
    assert_eq!(error.code, client_code::CONNECTION_FAILED);
    assert!(h.now - start <= 15_000);
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn a_rejected_handshake_fails_connect_with_the_api_code() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    h.drain();
    let (verdict, effects) = h.frame(Frame {
        kind: "connection.error",
        error: Some(Rejection::from(&ApiError::new(
            43,
            401,
            "signature is not valid",
        ))),
        ..Frame::default()
    });
    assert_eq!(verdict, FrameVerdict::Ignore);
    let Some(Effect::ConnectRejected(error)) = effects
        .iter()
        .find(|e| matches!(e, Effect::ConnectRejected(_)))
    else {
        panic!("{effects:?}");
    };
    assert_eq!((error.code, error.status), (43, Some(401)));
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "no retry after an API rejection"
    );
}

#[test]
fn an_expired_token_from_a_provider_is_reloaded_and_retried() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, true).unwrap();
    h.drain();
    h.frame(Frame {
        kind: "connection.error",
        error: Some(Rejection::from(&ApiError::new(40, 401, "token is expired"))),
        ..Frame::default()
    });
    let effects = h.advance_to(h.session.poll_timeout().unwrap());
    assert!(matches!(
        effects.last(),
        Some(Effect::OpenSocket {
            reload_token: true,
            ..
        })
    ));
    let (_, effects) = h.health("conn-1");
    assert!(effects.contains(&Effect::ConnectResolved));
}

#[test]
fn a_failing_token_provider_fails_the_first_connect_at_once_with_its_message() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, true).unwrap();
    h.drain();
    let socket = h.socket.expect("a socket was asked for");
    let failure = ClientError::new(
        client_code::TOKEN_PROVIDER,
        "the token provider failed: Error: backend down",
    );
    h.session
        .handle_token_failure(h.now, socket, failure.clone());
    let effects = h.drain();
    assert!(
        effects.contains(&Effect::ConnectRejected(failure)),
        "{effects:?}"
    );
    assert_eq!(h.session.poll_timeout(), None, "no retry, no timer left");
    assert_eq!(h.session.user_id(), None);
}

#[test]
fn a_failing_token_provider_on_a_reconnect_is_retried_after_the_backoff() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, true).unwrap();
    h.drain();
    h.health("conn-1");
    h.close(1006);
    while h.socket.is_none() {
        let deadline = h.session.poll_timeout().expect("a retry is scheduled");
        h.advance_to(deadline);
    }
    let socket = h.socket.take().expect("a reconnect socket");
    let failure = ClientError::new(client_code::TOKEN_PROVIDER, "the token provider failed: x");
    h.session.handle_token_failure(h.now, socket, failure);
    let effects = h.drain();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ConnectRejected(_))),
        "{effects:?}"
    );
    let effects = h.advance_to(h.session.poll_timeout().expect("a retry is scheduled"));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::OpenSocket { .. })),
        "{effects:?}"
    );
}

#[test]
fn the_first_failed_socket_of_a_connect_asks_once_why_and_a_verdict_ends_it_at_once() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    h.drain();
    let effects = h.close(1006);
    assert_eq!(
        effects.iter().filter(|e| **e == Effect::Diagnose).count(),
        1,
        "{effects:?}"
    );
    let deadline = h.session.poll_timeout().expect("a retry is scheduled");
    h.advance_to(deadline);
    let effects = h.close(1006);
    assert!(
        !effects.contains(&Effect::Diagnose),
        "asked once: {effects:?}"
    );
    let verdict = ClientError::new(client_code::CONNECTION_FAILED, "nothing answers");
    h.session.fail_connect(verdict.clone());
    let effects = h.drain();
    assert!(
        effects.contains(&Effect::ConnectRejected(verdict)),
        "{effects:?}"
    );
    assert_eq!(h.session.poll_timeout(), None, "no retry left");
}

#[test]
fn a_verdict_after_the_first_connection_changes_nothing() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.close(1006);
    h.session
        .fail_connect(ClientError::new(client_code::CONNECTION_FAILED, "late"));
    let effects = h.drain();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ConnectRejected(_) | Effect::Diagnose)),
        "{effects:?}"
    );
    assert!(h.session.poll_timeout().is_some(), "still retrying");
}

#[test]
fn an_outdated_me_is_not_held_and_the_newer_state_stays() {
    let mut h = Harness::new(no_pings());
    h.connect();
    // The user's own update, answered over REST, is newer than the `me` of a health check written before it.
    let newer = presence_at(USER, true, "Out for lunch", "2026-06-24T12:00:05Z");
    assert_eq!(
        h.answer(UsersAnswer::OwnWrite, vec![newer.clone()]),
        [Effect::StoreUser {
            at: 0,
            user_id: USER.into(),
            own: true
        }]
    );
    let older = presence_at(USER, true, "busy", "2026-06-24T12:00:00Z");
    let (verdict, _) = h.frame(Frame {
        kind: "health.check",
        connection_id: Some("conn-1"),
        me: Some(older.clone()),
        ..Frame::default()
    });
    assert_eq!(verdict, FrameVerdict::Dispatch);
    assert!(
        !h.session.holds(&older),
        "the client must not write the older `me`"
    );
    assert!(h.session.holds(&newer));
}

#[test]
fn frames_of_a_superseded_socket_are_ignored() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let old = h.socket.unwrap();
    h.reconnect("conn-2");
    let verdict = h.session.handle_frame(
        h.now,
        old,
        &Frame {
            kind: "user.presence.changed",
            user: Some(presence("jack", true, "")),
            ..Frame::default()
        },
    );
    assert_eq!(verdict, FrameVerdict::Ignore);
    assert!(h.session.users().get("jack").is_none());
}

#[test]
fn every_subscription_is_made_again_with_one_request_per_kind_and_chunk() {
    let mut h = Harness::new(Config::default());
    h.connect();
    // 40 presence queries naming 250 distinct users (overlapping), 65 channels watched with presence, 2 without
    // (one of which is watched again with presence), one stopped.
    for query in 0..40 {
        let ids: Vec<String> = (query * 5..query * 5 + 60)
            .map(|i| format!("u{i}"))
            .collect();
        h.session.follow_users(ids.iter().map(String::as_str));
    }
    for i in 0..65 {
        h.session.watch_channel("messaging", &format!("c{i}"), true);
    }
    h.session.watch_channel("team", "quiet", false);
    h.session.watch_channel("team", "loud", false);
    h.session.watch_channel("team", "loud", true);
    h.session.watch_channel("team", "gone", true);
    h.session.stop_watching("team", "gone");
    let effects = h.reconnect("conn-2");
    let Some(Effect::Resubscribe { requests, .. }) = effects
        .iter()
        .find(|e| matches!(e, Effect::Resubscribe { .. }))
    else {
        panic!("no resubscription: {effects:?}");
    };
    let mut users = Vec::new();
    let mut with_presence = Vec::new();
    let mut without = Vec::new();
    let (mut user_requests, mut channel_requests) = (0, 0);
    for request in requests {
        match request {
            Subscription::Users { ids } => {
                assert!(ids.len() <= subscriptions::USERS_PER_QUERY);
                user_requests += 1;
                users.extend(ids.iter().cloned());
            }
            Subscription::Channels { cids, presence } => {
                assert!(cids.len() <= subscriptions::CHANNELS_PER_QUERY);
                channel_requests += 1;
                if *presence {
                    with_presence.extend(cids.iter().cloned());
                } else {
                    without.extend(cids.iter().cloned());
                }
            }
        }
    }
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 255, "every followed user, once");
    assert_eq!(user_requests, 3, "255 users in chunks of 100");
    assert_eq!(with_presence.len(), 66);
    assert!(with_presence.contains(&"team:loud".to_string()));
    assert_eq!(without, ["team:quiet"]);
    assert_eq!(
        channel_requests, 4,
        "66 channels with presence in chunks of 30, and 1 without"
    );
    assert_eq!(h.session.connection_id(), Some("conn-2"));
    // connection.changed comes first; connection.recovered waits for the answers.
    // Positions, not `Option`s: `None < Some(_)`, so a missing `connection.changed` would pass.
    let changed = effects
        .iter()
        .position(|e| *e == Effect::ConnectionChanged { online: true })
        .expect("connection.changed is emitted");
    let resubscribe = effects
        .iter()
        .position(|e| matches!(e, Effect::Resubscribe { .. }))
        .expect("the subscriptions are made again");
    assert!(changed < resubscribe, "{effects:?}");
    assert!(!effects.contains(&Effect::ConnectionRecovered));
}

#[test]
fn the_initial_connect_is_not_a_recovery() {
    let mut h = Harness::new(Config::default());
    let effects = h.connect();
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::Resubscribe { .. } | Effect::ConnectionRecovered)));
}

#[test]
fn recovery_reconciles_the_cache_and_reports_changes_then_recovered() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.session.follow_users(["jack", "jane", "jim", "joe"]);
    h.session.watch_channel("messaging", "general", true);
    h.listed(vec![
        presence("jack", true, "here"),
        presence("jane", true, "here"),
        presence("jim", false, "away"),
        presence("joe", true, "here"),
    ]);
    let effects = h.reconnect("conn-2");
    let Some(Effect::Resubscribe { generation, .. }) = effects
        .iter()
        .find(|e| matches!(e, Effect::Resubscribe { .. }))
        .cloned()
    else {
        panic!("{effects:?}");
    };
    // jack went offline, jane is unchanged (only last_active moved), jim changed status, joe changed but a live
    // event after the request already told us.
    let jane = presence_at("jane", true, "here", "2026-02-02T00:00:00Z");
    h.frame(Frame {
        kind: "user.presence.changed",
        user: Some(presence("joe", false, "here")),
        ..Frame::default()
    });
    let effects = h.answer(
        UsersAnswer::Recovery { generation },
        vec![
            presence("jack", false, "here"),
            jane,
            presence("joe", true, "here"),
        ],
    );
    assert_eq!(
        effects,
        [store(0, "jack"), store(1, "jane"), store(2, "joe")],
        "the objects are stored; events wait for every answer"
    );
    let effects = h.answer(
        UsersAnswer::Recovery {
            generation: generation + 7,
        },
        vec![presence("jim", true, "x")],
    );
    assert_eq!(
        effects,
        [Effect::KeepCachedUser {
            user_id: "jim".into()
        }],
        "answers of an older generation are ignored"
    );
    let effects = h.answer(
        UsersAnswer::Recovery { generation },
        vec![
            presence("jim", false, "back soon"),
            presence("new", true, ""),
        ],
    );
    assert_eq!(
        effects,
        [
            store(0, "jim"),
            store(1, "new"),
            Effect::PresenceChanged {
                user_id: "jack".into()
            },
            Effect::PresenceChanged {
                user_id: "jim".into()
            },
            Effect::ConnectionRecovered,
        ]
    );
    assert!(!h.session.users().get("jack").unwrap().online);
    assert!(
        !h.session.users().get("joe").unwrap().online,
        "the live event wins"
    );
    assert_eq!(
        h.session
            .users()
            .get("jane")
            .unwrap()
            .last_active
            .as_deref(),
        Some("2026-02-02T00:00:00Z")
    );
}

#[test]
fn a_reconnect_without_subscriptions_recovers_at_once() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let effects = h.reconnect("conn-2");
    let tail: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Resubscribe { .. } | Effect::ConnectionRecovered))
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1], &Effect::ConnectionRecovered);
}

#[test]
fn a_drop_during_recovery_starts_a_new_one() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.session.follow_users(["jack"]);
    let effects = h.reconnect("conn-2");
    let first = effects.iter().find_map(|e| match e {
        Effect::Resubscribe { generation, .. } => Some(*generation),
        _ => None,
    });
    let effects = h.reconnect("conn-3");
    let second = effects.iter().find_map(|e| match e {
        Effect::Resubscribe { generation, .. } => Some(*generation),
        _ => None,
    });
    let first = UsersAnswer::Recovery {
        generation: first.unwrap(),
    };
    assert!(h.answer(first, vec![]).is_empty());
    let second = UsersAnswer::Recovery {
        generation: second.unwrap(),
    };
    assert_eq!(h.answer(second, vec![]), [Effect::ConnectionRecovered]);
}

#[test]
fn a_quick_reconnect_emits_no_offline_event() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let effects = h.reconnect("conn-2");
    assert!(!effects.contains(&Effect::ConnectionChanged { online: false }));
    assert!(effects.contains(&Effect::ConnectionChanged { online: true }));
    let effects = h.advance(10_000);
    assert!(!effects.contains(&Effect::ConnectionChanged { online: false }));
}

#[test]
fn a_server_close_of_an_open_socket_reconnects_whatever_the_code() {
    for code in [1000, 1001, 1006, 1011, 4000] {
        let mut h = Harness::new(Config::default());
        h.connect();
        let old = h.socket.expect("a socket");
        h.close(code);
        assert!(!h.session.is_connected(), "code {code}");
        // The first retry comes within the first backoff ceiling, on a new socket.
        let effects = h.advance(Config::default().backoff_base);
        let new = h
            .socket
            .unwrap_or_else(|| panic!("code {code}: no new socket within 2.5 s: {effects:?}"));
        assert_ne!(new, old, "code {code}");
        let (_, effects) = h.health("conn-2");
        assert_eq!(h.session.connection_id(), Some("conn-2"), "code {code}");
        assert!(
            effects.contains(&Effect::ConnectionRecovered),
            "code {code}: {effects:?}"
        );
    }
}

#[test]
fn wire_events_convert_to_frames() {
    let raw = r#"{"type":"user.presence.changed","created_at":"2026-01-01T00:00:00Z",
        "user":{"id":"jack","online":true,"status":"busy","last_active":"2026-01-01T00:00:00Z"}}"#;
    let event: Event = serde_json::from_str(raw).unwrap();
    let frame = Frame::from_event(&event);
    assert_eq!(frame.kind, "user.presence.changed");
    assert_eq!(frame.user.unwrap().state.status.as_deref(), Some("busy"));
    let watching: Event = serde_json::from_str(
        r#"{"type":"user.watching.start","user":{"id":"jack","online":true}}"#,
    )
    .unwrap();
    assert!(Frame::from_event(&watching).user.is_none());
}

impl Harness {
    /// After a failure: fails attempts at once until the scheduled retry is more than `ms` away.
    fn fail_until_the_wait_exceeds(&mut self, ms: Millis) {
        while self.session.poll_timeout().unwrap() - self.now <= ms {
            self.wait_for_attempt();
            self.close(1006);
        }
    }

    fn wait(&self) -> Millis {
        self.session.poll_timeout().expect("a retry is scheduled") - self.now
    }
}

#[test]
fn wake_ups_shorten_a_wait_at_most_once_per_backoff_cycle() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    h.connect();
    h.close(1006);
    h.fail_until_the_wait_exceeds(1_000);
    h.session.handle_wake(h.now);
    assert!(
        h.wait() <= config.wake_retry,
        "the first wake-up retries soon"
    );
    h.advance(h.wait());
    h.close(1006);
    // Flapping visibility or network during the rest of the cycle leaves the backoff alone.
    for round in 0..5 {
        h.fail_until_the_wait_exceeds(1_000);
        let scheduled = h.session.poll_timeout();
        for _ in 0..3 {
            h.session.handle_wake(h.now);
            h.session.handle_offline(h.now);
        }
        assert_eq!(
            h.session.poll_timeout(),
            scheduled,
            "round {round}: a later wake-up moved the retry"
        );
        h.wait_for_attempt();
        h.close(1006);
    }
    // A connection healthy for 30 s ends the cycle: the next wake-up shortens a wait again.
    h.wait_for_attempt();
    h.health("conn-2");
    h.stay_healthy(config.healthy_reset, "conn-2");
    h.close(1006);
    h.fail_until_the_wait_exceeds(1_000);
    h.session.handle_wake(h.now);
    assert!(h.wait() <= config.wake_retry, "a new cycle");
}

#[test]
fn a_wake_up_during_an_attempt_shortens_the_wait_after_it() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    h.connect();
    h.close(1006);
    h.fail_until_the_wait_exceeds(1_000);
    h.wait_for_attempt();
    // The network comes back while the attempt is in flight; the attempt then fails.
    h.session.handle_wake(h.now);
    h.close(1006);
    assert!(
        h.wait() <= config.wake_retry,
        "the wake-up was dropped: retry in {} ms",
        h.wait()
    );
    // It counted as this cycle's wake-up.
    h.wait_for_attempt();
    h.close(1006);
    h.fail_until_the_wait_exceeds(1_000);
    let scheduled = h.session.poll_timeout();
    h.session.handle_wake(h.now);
    assert_eq!(h.session.poll_timeout(), scheduled);
}

fn too_many_connections() -> Frame<'static> {
    Frame {
        kind: "connection.error",
        error: Some(Rejection::from(&ApiError::new(
            71,
            429,
            "too many connections",
        ))),
        ..Frame::default()
    }
}

#[test]
fn a_reconnect_refused_for_too_many_connections_is_retried_with_backoff() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    h.connect();
    h.close(1006);
    // The user's other tabs hold every connection the server allows: each attempt is refused with code 71 and
    // closed (whatever the code, 1000 included).
    let mut delays = Vec::new();
    for code in [1000, 1008, 4000, 1000, 1000, 1000] {
        delays.push(h.wait_for_attempt());
        let (verdict, effects) = h.frame(too_many_connections());
        assert_eq!(verdict, FrameVerdict::Ignore);
        assert!(
            !effects.contains(&Effect::ConnectionChanged { online: false }),
            "{effects:?}"
        );
        if h.socket.is_some() {
            h.close(code);
        }
        assert!(h.session.poll_timeout().is_some(), "gave up after code 71");
    }
    // The delays back off.
    assert!(delays[5] > config.backoff_base, "{delays:?}");
    // A tab closes: the next attempt gets in and the connection recovers.
    h.wait_for_attempt();
    let (_, effects) = h.health("conn-2");
    assert!(effects.contains(&Effect::ConnectionRecovered));
}

#[test]
fn a_first_connect_refused_for_too_many_connections_fails_with_code_71() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    h.drain();
    let effects = h.frame(too_many_connections()).1;
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::ConnectRejected(error) if error.code == 71)));
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn only_attempts_after_a_successful_connection_resend_the_last_known_user() {
    let mut h = Harness::new(Config::default());
    h.session.connect(h.now, USER, false).unwrap();
    let reconnect_flags = |effects: &[Effect]| -> Vec<bool> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::OpenSocket { reconnect, .. } => Some(*reconnect),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reconnect_flags(&h.drain()), [false]);
    // A failed first attempt is retried with what the app passed to connectUser.
    h.close(1006);
    let failed_at = h.now;
    let effects = h.advance_to(failed_at + Config::default().backoff_base);
    assert_eq!(reconnect_flags(&effects), [false]);
    h.health("conn-1");
    h.close(1006);
    let effects = h.advance_to(h.now + Config::default().backoff_base);
    assert_eq!(reconnect_flags(&effects), [true]);
    // A new session starts over.
    h.session.disconnect(h.now);
    h.drain();
    h.session.connect(h.now, USER, false).unwrap();
    assert_eq!(reconnect_flags(&h.drain()), [false]);
}

#[test]
fn each_disconnect_starts_a_new_epoch() {
    let mut h = Harness::new(Config::default());
    h.connect();
    let first = h.session.epoch();
    h.reconnect("conn-2");
    assert_eq!(h.session.epoch(), first, "a reconnect is the same session");
    h.session.disconnect(h.now);
    assert_ne!(h.session.epoch(), first);
}

fn token_expired() -> Frame<'static> {
    Frame {
        kind: "connection.error",
        error: Some(Rejection::from(&ApiError::new(40, 401, "token is expired"))),
        ..Frame::default()
    }
}

#[test]
fn a_reconnect_refused_for_an_expired_token_retries_with_a_fresh_one_after_the_floor() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    h.session.connect(h.now, USER, true).unwrap();
    h.drain();
    h.health("conn-1");
    h.close(1006);
    // The network was gone a while: the backoff has grown.
    h.fail_until_the_wait_exceeds(1_000);
    h.wait_for_attempt();
    h.frame(token_expired());
    assert_eq!(
        h.wait(),
        config.backoff_floor,
        "the fresh token waits out the backoff"
    );
    let effects = h.advance(config.backoff_floor);
    assert!(matches!(
        effects.last(),
        Some(Effect::OpenSocket {
            reload_token: true,
            ..
        })
    ));
    // A provider whose fresh tokens are refused too meets the backoff.
    h.frame(token_expired());
    assert!(h.wait() > config.backoff_floor);
    h.wait_for_attempt();
    let (_, effects) = h.health("conn-2");
    assert!(effects.contains(&Effect::ConnectionRecovered));
}

/// The answer's user `at` replaces the cached one.
fn store(at: usize, user_id: &str) -> Effect {
    Effect::StoreUser {
        at,
        user_id: user_id.into(),
        own: false,
    }
}

fn presence_event(user: UserPresence) -> Frame<'static> {
    Frame {
        kind: "user.presence.changed",
        user: Some(user),
        ..Frame::default()
    }
}

fn online(h: &Harness, id: &str) -> bool {
    h.session.users().get(id).expect("a known user").online
}

#[test]
fn an_event_older_than_the_cached_user_is_dispatched_but_does_not_roll_the_cache_back() {
    let mut h = Harness::new(no_pings());
    h.connect();
    // A queryUsers answer dated 12:00:10 says jack is online.
    h.listed(vec![presence_at(
        "jack",
        true,
        "here",
        "2026-01-01T12:00:10Z",
    )]);
    // An event from 12:00:05 (overtaken by that answer) says he went offline.
    let (verdict, _) = h.frame(presence_event(presence_at(
        "jack",
        false,
        "here",
        "2026-01-01T12:00:05Z",
    )));
    assert_eq!(
        verdict,
        FrameVerdict::DispatchOutdated,
        "listeners still get it"
    );
    assert!(online(&h, "jack"), "the cache keeps the newer answer");
    // Same time (a status change keeps last_active) or later: taken.
    let (verdict, _) = h.frame(presence_event(presence_at(
        "jack",
        true,
        "lunch",
        "2026-01-01T12:00:10Z",
    )));
    assert_eq!(verdict, FrameVerdict::Dispatch);
    assert_eq!(
        h.session.users().get("jack").unwrap().status.as_deref(),
        Some("lunch")
    );
    let (verdict, _) = h.frame(presence_event(presence_at(
        "jack",
        false,
        "lunch",
        "2026-01-01T12:01:00Z",
    )));
    assert_eq!(verdict, FrameVerdict::Dispatch);
    assert!(!online(&h, "jack"));
}

#[test]
fn an_answer_older_than_an_event_does_not_roll_the_cache_back() {
    let mut h = Harness::new(no_pings());
    h.connect();
    h.frame(presence_event(presence_at(
        "jack",
        false,
        "",
        "2026-01-01T12:00:20+00:00",
    )));
    // The answer to a query made before that event arrives after it; its time has another offset.
    let effects = h.listed(vec![presence_at(
        "jack",
        true,
        "",
        "2026-01-01T13:00:15+01:00",
    )]);
    assert_eq!(
        effects,
        [Effect::KeepCachedUser {
            user_id: "jack".into()
        }],
        "the embedding layer's cache keeps the event's user too"
    );
    assert!(!online(&h, "jack"));
    // A user without any time is not judged.
    let mut undated = presence("jack", true, "");
    undated.state.since = None;
    assert_eq!(h.listed(vec![undated]), [store(0, "jack")]);
    assert!(online(&h, "jack"));
}

#[test]
fn a_recovery_answer_older_than_an_event_does_not_roll_the_cache_back() {
    let mut h = Harness::new(no_pings());
    h.connect();
    h.session.follow_users(["jack", "jill"]);
    h.listed(vec![
        presence_at("jack", true, "", "2026-01-01T12:00:00Z"),
        presence_at("jill", true, "", "2026-01-01T12:00:00Z"),
    ]);
    let effects = h.reconnect("conn-2");
    let generation = effects
        .iter()
        .find_map(|e| match e {
            Effect::Resubscribe { generation, .. } => Some(*generation),
            _ => None,
        })
        .expect("a recovery");
    // An event on the new connection says jack left at 12:00:30; the answer, which the server read before, comes
    // after it.
    h.frame(presence_event(presence_at(
        "jack",
        false,
        "",
        "2026-01-01T12:00:30Z",
    )));
    let effects = h.answer(
        UsersAnswer::Recovery { generation },
        vec![
            // Read by the server at 12:00:29, before jack left.
            presence_at("jack", true, "", "2026-01-01T12:00:29Z"),
            // jill went offline while the socket was down.
            presence_at("jill", false, "", "2026-01-01T12:00:31Z"),
        ],
    );
    assert_eq!(
        effects,
        [
            // Only jill's answer lands in the cache.
            Effect::KeepCachedUser {
                user_id: "jack".into()
            },
            store(1, "jill"),
            Effect::PresenceChanged {
                user_id: "jill".into()
            },
            Effect::ConnectionRecovered
        ]
    );
    assert!(!online(&h, "jack"), "the recovery did not bring jack back");
    assert!(!online(&h, "jill"));
}

#[test]
fn an_event_without_a_time_of_its_user_is_dated_by_its_created_at() {
    let older: Event = serde_json::from_str(
        r#"{"type":"user.presence.changed","created_at":"2026-01-01T12:00:05Z","user":{"id":"jack","online":false}}"#,
    )
    .unwrap();
    let mut h = Harness::new(no_pings());
    h.connect();
    h.listed(vec![presence_at("jack", true, "", "2026-01-01T12:00:10Z")]);
    let (verdict, _) = h.frame(Frame::from_event(&older));
    assert_eq!(verdict, FrameVerdict::DispatchOutdated);
    assert!(online(&h, "jack"));
}

#[test]
fn users_a_presence_query_returned_are_followed_and_asked_for_again_on_recovery() {
    let mut h = Harness::new(no_pings());
    h.connect();
    let effects = h.answer(
        UsersAnswer::Listed { follow: true },
        vec![presence("jack", true, "here"), presence("jill", false, "")],
    );
    assert_eq!(effects, [store(0, "jack"), store(1, "jill")]);
    // A list made without presence (or a channel's members) is not followed.
    h.listed(vec![presence("joe", true, "")]);
    let effects = h.reconnect("conn-2");
    let requests = effects
        .iter()
        .find_map(|e| match e {
            Effect::Resubscribe { requests, .. } => Some(requests.clone()),
            _ => None,
        })
        .expect("a recovery");
    assert_eq!(
        requests,
        [Subscription::Users {
            ids: vec!["jack".into(), "jill".into()]
        }]
    );
}

#[test]
fn the_users_own_write_is_merged_unless_an_event_overtook_it() {
    let mut h = Harness::new(no_pings());
    h.connect();
    h.frame(presence_event(presence_at(
        USER,
        true,
        "in a meeting",
        "2026-01-01T12:00:20Z",
    )));
    // The answer to an update the server applied before that event.
    let effects = h.answer(
        UsersAnswer::OwnWrite,
        vec![presence_at(USER, true, "lunch", "2026-01-01T12:00:10Z")],
    );
    assert_eq!(
        effects,
        [Effect::KeepCachedUser {
            user_id: USER.into()
        }],
        "client.user keeps the event's status"
    );
    assert_eq!(
        h.session.users().get(USER).unwrap().status.as_deref(),
        Some("in a meeting")
    );
    let effects = h.answer(
        UsersAnswer::OwnWrite,
        vec![presence_at(USER, true, "back", "2026-01-01T12:00:30Z")],
    );
    assert_eq!(
        effects,
        [Effect::StoreUser {
            at: 0,
            user_id: USER.into(),
            own: true
        }]
    );
}
