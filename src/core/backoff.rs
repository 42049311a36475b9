//! Reconnect delays: exponential growth with full jitter, drawn from a generator the caller seeds.

use crate::core::time::Millis;

/// Exponential backoff with full jitter: the n-th consecutive failure waits a uniform random time in
/// `[0, min(cap, base * 2^n)]`, so a crowd of clients dropped at the same moment spreads out instead of
/// reconnecting in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Millis,
    cap: Millis,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Millis, cap: Millis) -> Self {
        Backoff {
            base: base.max(1),
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Millis {
        let factor = 1u64 << self.failures.min(32);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Counts one more failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Millis {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        rng.u64(0..=ceiling)
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Called after a successful connection.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_growing_bounds_and_reach_the_cap() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut backoff = Backoff::new(500, 25_000);
        let expected_ceilings = [
            500, 1_000, 2_000, 4_000, 8_000, 16_000, 25_000, 25_000, 25_000,
        ];
        for ceiling in expected_ceilings {
            assert_eq!(backoff.ceiling(), ceiling);
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= ceiling, "{delay} > {ceiling}");
        }
        assert_eq!(backoff.failures(), 9);
        for _ in 0..100 {
            assert!(backoff.next_delay(&mut rng) <= 25_000);
        }
    }

    #[test]
    fn jitter_covers_the_whole_range() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut low = false;
        let mut high = false;
        for _ in 0..1_000 {
            let mut backoff = Backoff::new(500, 25_000);
            for _ in 0..6 {
                backoff.next_delay(&mut rng);
            }
            let d = backoff.next_delay(&mut rng);
            low |= d < 2_500;
            high |= d > 22_500;
        }
        assert!(low && high, "full jitter spans [0, cap]");
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut backoff = Backoff::new(500, 25_000);
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(&mut rng) <= 500);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut backoff = Backoff::new(500, 25_000);
        for _ in 0..200 {
            assert!(backoff.next_delay(&mut rng) <= 25_000);
        }
    }
}
