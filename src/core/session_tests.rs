//! Session behaviour under a manual clock and seeded randomness.

use super::*;
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
    UserPresence {
        id: id.to_string(),
        state: PresenceState {
            online,
            status: Some(status.to_string()),
            last_active: Some("2026-01-01T00:00:00Z".to_string()),
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

#[test]
fn reconnect_delays_grow_within_bounds_and_reset_after_success() {
    // Full jitter: the n-th consecutive delay is uniform in [0, min(25 s, 500 ms * 2^n)]. Across many seeds, each
    // step stays under its ceiling, comes close to it, and averages about half of it: delays that stayed small
    // (a reconnect storm) or stopped growing fail here as surely as delays above the ceiling.
    const SEEDS: u64 = 200;
    let mut ceilings = vec![500, 1_000, 2_000, 4_000, 8_000, 16_000];
    // Stays capped, and never gives up.
    ceilings.extend([25_000; 50]);
    // A success resets the backoff: the first delay after it is again under 500 ms.
    ceilings.push(500);
    let reset_step = ceilings.len() - 1;
    let mut delays = vec![Vec::new(); ceilings.len()];
    for seed in 0..SEEDS {
        let mut h = Harness::with_seed(Config::default(), seed);
        h.connect();
        h.close(1006);
        for (step, got) in delays.iter_mut().enumerate() {
            if step == reset_step {
                h.health("conn-2");
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
        let mean = got.iter().sum::<Millis>() / SEEDS;
        assert!(
            max <= *ceiling,
            "step {step}: a delay of {max} ms is above {ceiling} ms"
        );
        assert!(
            max >= ceiling * 9 / 10,
            "step {step}: no delay comes near {ceiling} ms (at most {max} ms)"
        );
        assert!(
            (ceiling * 2 / 5..=ceiling * 3 / 5).contains(&mean),
            "step {step}: the mean delay {mean} ms is not about half of {ceiling} ms"
        );
    }
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
fn every_subscription_is_made_again_after_a_reconnect() {
    let mut h = Harness::new(Config::default());
    h.connect();
    h.session.watch_channel("messaging", "general", true);
    h.session.watch_channel("messaging", "random", false);
    for i in 0..40 {
        h.session.add_user_query(format!(
            r#"{{"filter_conditions":{{"id":"u{i}"}},"presence":true}}"#
        ));
    }
    h.session.stop_watching("messaging", "random");
    let effects = h.reconnect("conn-2");
    let Some(Effect::Resubscribe { requests, .. }) = effects
        .iter()
        .find(|e| matches!(e, Effect::Resubscribe { .. }))
    else {
        panic!("no resubscription: {effects:?}");
    };
    assert_eq!(
        requests.len(),
        41,
        "all 40 queries (no cap) and the still-watched channel"
    );
    assert!(requests.contains(&Subscription::Channel {
        channel_type: "messaging".into(),
        id: "general".into(),
        presence: true
    }));
    assert_eq!(h.session.connection_id(), Some("conn-2"));
    // connection.changed comes first; connection.recovered waits for the answers.
    let changed = effects
        .iter()
        .position(|e| *e == Effect::ConnectionChanged { online: true });
    let resubscribe = effects
        .iter()
        .position(|e| matches!(e, Effect::Resubscribe { .. }));
    assert!(changed < resubscribe);
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
    h.session.add_user_query("q1".into());
    h.session.watch_channel("messaging", "general", true);
    h.session.observe_users([
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
    let mut jane = presence("jane", true, "here");
    jane.state.last_active = Some("2026-02-02T00:00:00Z".into());
    h.frame(Frame {
        kind: "user.presence.changed",
        user: Some(presence("joe", false, "here")),
        ..Frame::default()
    });
    h.session.handle_recovery_answer(
        generation,
        vec![
            presence("jack", false, "here"),
            jane,
            presence("joe", true, "here"),
        ],
    );
    assert!(h.drain().is_empty(), "waits for every answer");
    h.session
        .handle_recovery_answer(generation + 7, vec![presence("jim", true, "x")]);
    assert!(
        h.drain().is_empty(),
        "answers of an older generation are ignored"
    );
    h.session.handle_recovery_answer(
        generation,
        vec![
            presence("jim", false, "back soon"),
            presence("new", true, ""),
        ],
    );
    let effects = h.drain();
    assert_eq!(
        effects,
        [
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
    h.session.add_user_query("q1".into());
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
    h.session.handle_recovery_answer(first.unwrap(), vec![]);
    assert!(h.drain().is_empty());
    h.session.handle_recovery_answer(second.unwrap(), vec![]);
    assert_eq!(h.drain(), [Effect::ConnectionRecovered]);
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
        // The first retry comes within the base delay, on a new socket.
        let effects = h.advance(500);
        let new = h
            .socket
            .unwrap_or_else(|| panic!("code {code}: no new socket within 500 ms: {effects:?}"));
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
