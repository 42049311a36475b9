//! What a [`Session`](super::Session) remembers between the attempts of one `connectUser`: whether a connection
//! succeeded (the next one is a recovery), whether the connection counts as up (and when a pending
//! `connection.changed {online:false}` is due), the one wake-up per backoff cycle, the one token reload per
//! refusal, and the one diagnosis per `connectUser`. Each method is a transition; nothing else changes them.

use crate::core::time::Millis;

#[derive(Debug, Default)]
pub(super) struct Reconnect {
    /// A connection succeeded since `connect`: the next one is a recovery.
    connected_before: bool,
    /// The app was told the connection is up (`connection.changed {online:true}`).
    healthy: bool,
    /// When `connection.changed {online:false}` is due, if the connection is still down then.
    offline_event_at: Option<Millis>,
    /// A wake-up has shortened a wait in this backoff cycle (which ends when a connection stays healthy for
    /// `healthy_reset`): later ones leave the backoff alone.
    wake_spent: bool,
    /// A wake-up arrived while an attempt was in flight: if that attempt fails, the retry comes soon.
    wake_pending: bool,
    /// The next attempt asks the token provider again.
    reload_token: bool,
    /// The token was reloaded after a refusal since the last successful connection.
    token_reloaded: bool,
    /// This `connectUser` has asked for its diagnosis (once, at its first failed socket).
    diagnosed: bool,
}

impl Reconnect {
    /// `disconnectUser()`: nothing of the old user's connection is remembered.
    pub(super) fn forget(&mut self) {
        *self = Reconnect::default();
    }

    /// A new `connectUser` may ask for its own diagnosis.
    pub(super) fn connect_started(&mut self) {
        self.diagnosed = false;
    }

    /// Whether a connection succeeded since `connect` (the next one is a recovery).
    pub(super) fn connected_before(&self) -> bool {
        self.connected_before
    }

    /// A handshake succeeded: the wake-up and the token reload waiting for its outcome are spent. Returns
    /// whether it is a reconnect (the state must be recovered).
    pub(super) fn opened(&mut self) -> bool {
        self.wake_pending = false;
        self.token_reloaded = false;
        std::mem::replace(&mut self.connected_before, true)
    }

    /// The first connection failed for good: the next `connectUser` starts afresh.
    pub(super) fn first_connection_failed(&mut self) {
        self.connected_before = false;
    }

    /// Whether the first failed socket of this `connectUser` (none succeeded yet) is to be diagnosed: once.
    pub(super) fn diagnose_first_failure(&mut self) -> bool {
        if self.connected_before || self.diagnosed {
            return false;
        }
        self.diagnosed = true;
        true
    }

    /// The connection is up; returns whether the app is to be told (it was down).
    pub(super) fn went_healthy(&mut self) -> bool {
        self.offline_event_at = None;
        !std::mem::replace(&mut self.healthy, true)
    }

    /// The connection went down: the app is told after `delay`, unless it is back by then.
    pub(super) fn went_unhealthy(&mut self, now: Millis, delay: Millis) {
        if std::mem::take(&mut self.healthy) {
            self.offline_event_at = Some(now.saturating_add(delay));
        }
    }

    /// The connection is down with nothing pending: the page was hidden, or the client gave up (which reports
    /// itself).
    pub(super) fn went_down(&mut self) {
        self.healthy = false;
        self.offline_event_at = None;
    }

    /// When the pending `connection.changed {online:false}` is due.
    pub(super) fn offline_event_at(&self) -> Option<Millis> {
        self.offline_event_at
    }

    /// Whether `connection.changed {online:false}` is to be emitted at `now`: it is due and the connection is
    /// still down (once).
    pub(super) fn offline_event_due(&mut self, now: Millis) -> bool {
        match self.offline_event_at {
            Some(at) if now >= at => {
                self.offline_event_at = None;
                !self.healthy
            }
            _ => false,
        }
    }

    /// A wake-up wants to shorten a wait: allowed once per backoff cycle. Returns whether it may.
    pub(super) fn spend_wake(&mut self) -> bool {
        !std::mem::replace(&mut self.wake_spent, true)
    }

    /// A wake-up arrived during an attempt: it applies to the wait after it, should the attempt fail.
    pub(super) fn wake_during_attempt(&mut self) {
        self.wake_pending = true;
    }

    /// An attempt failed: whether a wake-up during it shortens the wait that follows (once per cycle).
    pub(super) fn take_pending_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake_pending) && self.spend_wake()
    }

    /// A connection stayed healthy for `healthy_reset`: the backoff cycle ends, the next wake-up counts again.
    pub(super) fn cycle_ended(&mut self) {
        self.wake_spent = false;
    }

    /// A refusal that a fresh token cures: the next attempt reloads it. Returns whether this is the first such
    /// refusal since the last successful connection (then the retry does not count as a network failure).
    pub(super) fn reload_after_refusal(&mut self) -> bool {
        self.reload_token = true;
        !std::mem::replace(&mut self.token_reloaded, true)
    }

    /// The next attempt asks the token provider again (`reload`) or not.
    pub(super) fn reload_next(&mut self, reload: bool) {
        self.reload_token = reload;
    }

    /// An attempt starts: whether it asks for a fresh token (once).
    pub(super) fn take_reload_token(&mut self) -> bool {
        std::mem::take(&mut self.reload_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offline_event_waits_and_is_dropped_when_the_connection_is_back() {
        let mut reconnect = Reconnect::default();
        assert!(reconnect.went_healthy(), "the first connection is reported");
        assert!(!reconnect.went_healthy(), "once");
        reconnect.went_unhealthy(1_000, 5_000);
        assert_eq!(reconnect.offline_event_at(), Some(6_000));
        assert!(!reconnect.offline_event_due(5_999));
        assert!(reconnect.offline_event_due(6_000));
        assert!(!reconnect.offline_event_due(7_000), "once");
        reconnect.went_unhealthy(8_000, 5_000);
        assert_eq!(reconnect.offline_event_at(), None, "already reported down");
        assert!(reconnect.went_healthy());
        reconnect.went_unhealthy(10_000, 5_000);
        assert!(reconnect.went_healthy());
        assert!(
            !reconnect.offline_event_due(20_000),
            "back before the offline event was due: it is dropped"
        );
    }

    #[test]
    fn one_wake_up_per_backoff_cycle_and_one_token_reload_per_connection() {
        let mut reconnect = Reconnect::default();
        reconnect.wake_during_attempt();
        assert!(reconnect.take_pending_wake());
        reconnect.wake_during_attempt();
        assert!(!reconnect.take_pending_wake(), "spent in this cycle");
        assert!(!reconnect.spend_wake());
        reconnect.cycle_ended();
        assert!(reconnect.spend_wake());

        assert!(reconnect.reload_after_refusal());
        assert!(reconnect.take_reload_token());
        assert!(!reconnect.take_reload_token(), "one attempt reloads");
        assert!(
            !reconnect.reload_after_refusal(),
            "refused again: the backoff applies"
        );
        assert!(!reconnect.opened(), "the first connection is no reconnect");
        assert!(
            reconnect.reload_after_refusal(),
            "a new connection may reload again"
        );
        assert!(reconnect.opened());
    }
}
