//! Reconnect delays: exponential growth with full jitter above a floor, drawn from a generator the caller seeds.

use crate::core::time::Millis;

/// Exponential backoff with full jitter: after n consecutive failures the next attempt waits a uniform random time
/// in `[floor, min(cap, first · 2^n)]`, so a crowd of clients dropped at the same moment spreads over the whole
/// window instead of reconnecting in lockstep, and no client ever retries sooner than `floor`.
#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Millis,
    first: Millis,
    cap: Millis,
    failures: u32,
}

impl Backoff {
    /// `first` is the ceiling of the first delay; `floor` ≤ `first` ≤ `cap` is enforced.
    pub fn new(floor: Millis, first: Millis, cap: Millis) -> Self {
        let first = first.max(floor).max(1);
        Backoff {
            floor,
            first,
            cap: cap.max(first),
            failures: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Millis {
        let factor = 1u64 << self.failures.min(32);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The lower bound of every delay.
    pub fn floor(&self) -> Millis {
        self.floor
    }

    /// Counts one more failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Millis {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        rng.u64(self.floor..=ceiling)
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Called once a connection has proven healthy.
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
        let mut backoff = Backoff::new(250, 2_500, 25_000);
        let expected_ceilings = [2_500, 5_000, 10_000, 20_000, 25_000, 25_000, 25_000];
        for ceiling in expected_ceilings {
            assert_eq!(backoff.ceiling(), ceiling);
            let delay = backoff.next_delay(&mut rng);
            assert!(
                (250..=ceiling).contains(&delay),
                "{delay} not in [250, {ceiling}]"
            );
        }
        assert_eq!(backoff.failures(), 7);
        for _ in 0..100 {
            assert!((250..=25_000).contains(&backoff.next_delay(&mut rng)));
        }
    }

    #[test]
    fn jitter_covers_the_whole_range_above_the_floor() {
        let mut rng = fastrand::Rng::with_seed(1);
        let (mut low, mut high) = (Millis::MAX, 0);
        for _ in 0..1_000 {
            let mut backoff = Backoff::new(250, 2_500, 25_000);
            for _ in 0..6 {
                backoff.next_delay(&mut rng);
            }
            let d = backoff.next_delay(&mut rng);
            low = low.min(d);
            high = high.max(d);
        }
        assert!(low >= 250, "below the floor: {low}");
        assert!(
            low < 2_500 && high > 22_500,
            "full jitter spans [floor, cap]: {low}..{high}"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut backoff = Backoff::new(250, 2_500, 25_000);
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(&mut rng) <= 2_500);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut backoff = Backoff::new(250, 2_500, 25_000);
        for _ in 0..200 {
            assert!(backoff.next_delay(&mut rng) <= 25_000);
        }
    }
}
