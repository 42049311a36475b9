//! Readmission after a start. A server that comes back (after a crash or a deploy) finds every client it had
//! reconnecting at once: they all lost it at the same moment and all draw their first retry from the same short
//! window. Each connect costs a token check, the user's `last_active` write and a presence event to everyone
//! following the user, so the whole crowd in one or two seconds is the load peak of the server's life. While
//! such a crowd is expected, connects are let in at a pace that spreads it over the readmission window; a
//! refused one is answered 429 (code 9, `Retry-After`) before the upgrade, which every client treats as a failed
//! attempt and retries after its backoff. Only a connect whose API key and token check out is counted or paced:
//! junk refused for its credentials would otherwise spend the returning crowd's budget and end the pacing early.
//!
//! The crowd is estimated from storage: the users whose stored `last_active` is recent enough that they may
//! have been connected when the previous process ended (a connected user's stored value is at most one refresh
//! period old). A crowd the server would readmit within the window at [`UNPACED_RATE`] comes straight in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connects per second below which pacing is not worth a refusal.
pub const UNPACED_RATE: f64 = 50.0;
/// Connects the bucket may hold, as a share of one second's rate: the pace is smooth within a second.
const BURST_SHARE: f64 = 0.1;

/// The pace connects are admitted at while a readmission is under way.
pub struct Admission {
    pacing: Mutex<Option<Pacing>>,
}

struct Pacing {
    /// Connects per second.
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
    /// Connects still expected; pacing ends when they are in, or at `until`.
    expected: u64,
    until: Instant,
}

impl Admission {
    /// No pacing: every connect is admitted.
    pub fn open() -> Admission {
        Admission {
            pacing: Mutex::new(None),
        }
    }

    /// Readmission of `returning` clients over `window` from `now`: paced only if letting them in at
    /// [`UNPACED_RATE`] would take longer than the window (a zero window never paces). Pacing ends once
    /// `returning` connects were admitted, or after twice the window (the last refused clients retry late).
    pub fn readmitting(returning: u64, window: Duration, now: Instant) -> Admission {
        let secs = window.as_secs_f64();
        let rate = returning as f64 / secs;
        if secs == 0.0 || rate <= UNPACED_RATE {
            return Admission::open();
        }
        let capacity = (rate * BURST_SHARE).max(1.0);
        Admission {
            pacing: Mutex::new(Some(Pacing {
                rate,
                capacity,
                tokens: capacity,
                refilled: now,
                expected: returning,
                until: now + window * 2,
            })),
        }
    }

    /// Whether a connect arriving at `now` may go on.
    pub fn admit(&self, now: Instant) -> bool {
        let mut slot = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pacing) = slot.as_mut() else {
            return true;
        };
        if now >= pacing.until || pacing.expected == 0 {
            *slot = None;
            return true;
        }
        let elapsed = now.saturating_duration_since(pacing.refilled).as_secs_f64();
        pacing.tokens = (pacing.tokens + elapsed * pacing.rate).min(pacing.capacity);
        pacing.refilled = now;
        if pacing.tokens < 1.0 {
            return false;
        }
        pacing.tokens -= 1.0;
        pacing.expected -= 1;
        if pacing.expected == 0 {
            *slot = None;
        }
        true
    }

    /// Whether connects are being paced.
    pub fn is_pacing(&self) -> bool {
        self.pacing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admissions per second when `attempts` connects arrive evenly over `span` and every refused one is
    /// retried `retry` later, until all are in.
    fn simulate(admission: &Admission, start: Instant, attempts: u64, span: Duration) -> Vec<u64> {
        let retry = Duration::from_millis(700);
        let mut pending: Vec<Duration> = (0..attempts)
            .map(|i| span.mul_f64(i as f64 / attempts as f64))
            .collect();
        let mut per_second = Vec::new();
        while !pending.is_empty() {
            pending.sort();
            let at = pending.remove(0);
            if admission.admit(start + at) {
                let second = at.as_secs() as usize;
                if per_second.len() <= second {
                    per_second.resize(second + 1, 0);
                }
                per_second[second] += 1;
            } else {
                pending.push(at + retry);
            }
        }
        per_second
    }

    #[test]
    fn a_crowd_is_spread_over_the_window() {
        let start = Instant::now();
        let admission = Admission::readmitting(1_000, Duration::from_secs(12), start);
        assert!(admission.is_pacing());
        // Everyone retries within the first 2.5 s, as after a restart.
        let per_second = simulate(&admission, start, 1_000, Duration::from_millis(2_500));
        let total: u64 = per_second.iter().sum();
        assert_eq!(total, 1_000);
        let busiest = per_second.iter().copied().max().unwrap_or(0);
        // 1,000 / 12 s ≈ 84 per second, plus the bucket's few.
        assert!(busiest <= 100, "busiest second {busiest}: {per_second:?}");
        assert!(per_second.len() >= 11, "over {} s", per_second.len());
        // Once everyone expected is in, nothing is paced.
        assert!(!admission.is_pacing());
    }

    #[test]
    fn a_small_crowd_comes_straight_back() {
        let start = Instant::now();
        // 600 in 12 s is 50 per second: not paced.
        let admission = Admission::readmitting(600, Duration::from_secs(12), start);
        assert!(!admission.is_pacing());
        let per_second = simulate(&admission, start, 600, Duration::from_millis(500));
        assert_eq!(per_second, vec![600]);
        let zero = Admission::readmitting(1_000_000, Duration::ZERO, start);
        assert!(!zero.is_pacing());
    }

    #[test]
    fn pacing_ends_with_the_window() {
        let start = Instant::now();
        let admission = Admission::readmitting(10_000, Duration::from_secs(10), start);
        let mut admitted = 0;
        for _ in 0..1_000 {
            admitted += u64::from(admission.admit(start + Duration::from_secs(1)));
        }
        // What the bucket holds: a tenth of a second's rate (1,000 per second).
        assert_eq!(admitted, 100);
        assert!(admission.is_pacing());
        // After twice the window every connect is let in, though fewer than expected came.
        let after = start + Duration::from_secs(20);
        assert!((0..1_000).all(|_| admission.admit(after)));
        assert!(!admission.is_pacing());
    }
}
