//! How recently a connection was heard from, against the server's ping schedule: written by the connection's
//! reader, read when a new connection of the same user arrives at the per-user cap and a dead one may give way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Liveness {
    opened: Instant,
    ping_interval: Duration,
    /// Nanoseconds from `opened` to the last frame heard from the client.
    last_heard: AtomicU64,
}

impl Liveness {
    /// A connection opened at `opened` (which counts as hearing from it), pinged by the server at
    /// `opened + k·ping_interval` for k ≥ 1.
    pub fn new(opened: Instant, ping_interval: Duration) -> Liveness {
        Liveness {
            opened,
            ping_interval,
            last_heard: AtomicU64::new(0),
        }
    }

    /// A frame (a pong or anything else) arrived at `at`.
    pub fn heard(&self, at: Instant) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.opened).as_nanos()).unwrap_or(u64::MAX);
        self.last_heard.store(nanos, Ordering::Relaxed);
    }

    /// When the last frame arrived (the opening if none has).
    pub fn last_heard(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_heard.load(Ordering::Relaxed))
    }

    /// Whether the connection has missed a pong at `now`: nothing at all has been heard from it since a ping
    /// that fell due at least one ping interval before `now`. Pings fall due on the schedule whether or not the
    /// connection got them out, so a connection whose socket buffers are full counts as well. A live client answers
    /// every ping within its round trip and never qualifies; a dead one does after one to two ping intervals of
    /// silence, depending on where in the ping cycle it fell silent.
    pub fn missed_pong(&self, now: Instant) -> bool {
        let interval = self.ping_interval.as_nanos();
        if interval == 0 {
            return false;
        }
        let heard = u128::from(self.last_heard.load(Ordering::Relaxed));
        let first_ping_after = (heard / interval + 1) * interval;
        now.saturating_duration_since(self.opened).as_nanos() >= first_ping_after + interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_connection_that_answers_every_ping_never_misses_one() {
        let t0 = Instant::now();
        let live = Liveness::new(t0, P);
        for k in 1..50u64 {
            // The ping due at k·P is answered 99 ms later, just inside the next interval.
            live.heard(t0 + P * k as u32 + ms(99));
            for offset in [99, 100, 150, 198] {
                assert!(
                    !live.missed_pong(t0 + P * k as u32 + ms(offset)),
                    "k {k} +{offset} ms"
                );
            }
        }
    }

    #[test]
    fn silence_past_the_ping_after_the_last_frame_plus_one_interval_is_a_missed_pong() {
        let t0 = Instant::now();
        let conn = Liveness::new(t0, P);
        // Never heard after opening: the ping at 100 ms goes unanswered until 200 ms.
        assert!(!conn.missed_pong(t0 + ms(199)));
        assert!(conn.missed_pong(t0 + ms(200)));
        // Heard just before a ping falls due: missed one interval after that ping.
        conn.heard(t0 + ms(299));
        assert!(!conn.missed_pong(t0 + ms(399)));
        assert!(conn.missed_pong(t0 + ms(400)));
        // Heard just after one: the next ping is the one that goes unanswered.
        conn.heard(t0 + ms(301));
        assert!(!conn.missed_pong(t0 + ms(499)));
        assert!(conn.missed_pong(t0 + ms(500)));
        assert_eq!(conn.last_heard(), t0 + ms(301));
    }
}
