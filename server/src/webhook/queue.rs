//! What is waiting to be delivered, with no IO and time as an argument: one line per user (the next event of a
//! user waits for the previous one's acknowledgement), retries with exponential backoff and jitter, a bound on
//! everything waiting (the oldest dropped past it), and events given up after the retry window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::model::WebhookEvent;

/// The first retry comes after about this long; each next one after twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One event and its delivery so far.
#[derive(Debug, Clone)]
pub struct Job {
    pub event: WebhookEvent,
    /// Attempts made: the next is `attempts + 1`.
    pub attempts: u32,
    /// When the first attempt failed (the retry window counts from it).
    pub failing_since: Option<Instant>,
    /// Its place in arrival order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Line {
    jobs: VecDeque<Job>,
    /// Its head is being delivered.
    busy: bool,
    /// Its head waits until then after a failure.
    retry_at: Option<Instant>,
}

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
}

/// What the queue decided about an event: it leaves the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaving {
    Delivered(WebhookEvent),
    /// Dropped: past the bound, or still failing after the retry window.
    Dropped(WebhookEvent),
}

#[derive(Debug)]
pub struct Queue {
    lines: HashMap<String, Line>,
    /// Every waiting event's arrival number → its user: the oldest is the first.
    arrivals: BTreeMap<u64, String>,
    next_seq: u64,
    max: usize,
    retry_window: Duration,
    /// A source of jitter (xorshift), seeded by the caller.
    rng: u64,
}

impl Queue {
    pub fn new(max: usize, retry_window: Duration, seed: u64) -> Queue {
        Queue {
            lines: HashMap::new(),
            arrivals: BTreeMap::new(),
            next_seq: 0,
            max: max.max(1),
            retry_window,
            rng: seed | 1,
        }
    }

    /// Events waiting (in flight included).
    pub fn len(&self) -> usize {
        self.arrivals.len()
    }

    /// Adds `event` behind its user's earlier ones; returns the events dropped to stay within the bound (the
    /// oldest waiting, never one in flight).
    pub fn push(&mut self, event: WebhookEvent) -> Vec<Leaving> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.arrivals.insert(seq, event.user_id.clone());
        let line = self.lines.entry(event.user_id.clone()).or_default();
        line.jobs.push_back(Job {
            event,
            attempts: 0,
            failing_since: None,
            seq,
        });
        let mut dropped = Vec::new();
        while self.arrivals.len() > self.max {
            let Some(job) = self.drop_oldest() else {
                break;
            };
            dropped.push(Leaving::Dropped(job.event));
        }
        dropped
    }

    /// The oldest event not in flight, out of the queue.
    fn drop_oldest(&mut self) -> Option<Job> {
        let (seq, user) = self.arrivals.iter().find_map(|(seq, user)| {
            let line = self.lines.get(user)?;
            let head_busy = line.busy && line.jobs.front().is_some_and(|j| j.seq == *seq);
            (!head_busy).then(|| (*seq, user.clone()))
        })?;
        self.arrivals.remove(&seq);
        let line = self.lines.get_mut(&user)?;
        let at = line.jobs.iter().position(|j| j.seq == seq)?;
        let job = line.jobs.remove(at);
        if at == 0 {
            line.retry_at = None;
        }
        if line.jobs.is_empty() {
            self.lines.remove(&user);
        }
        job
    }

    /// The heads that may go out now (not in flight, not waiting for a retry), at most `room`, oldest first;
    /// each is marked in flight.
    pub fn take_due(&mut self, now: Instant, room: usize) -> Vec<Job> {
        let mut due: Vec<(u64, String)> = self
            .lines
            .iter()
            .filter(|(_, line)| !line.busy && line.retry_at.is_none_or(|at| at <= now))
            .filter_map(|(user, line)| line.jobs.front().map(|j| (j.seq, user.clone())))
            .collect();
        due.sort_unstable();
        due.truncate(room);
        due.into_iter()
            .filter_map(|(_, user)| {
                let line = self.lines.get_mut(&user)?;
                line.busy = true;
                line.retry_at = None;
                line.jobs.front().cloned()
            })
            .collect()
    }

    /// When the next head waiting for its retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.lines
            .values()
            .filter(|line| !line.busy)
            .filter_map(|line| line.retry_at)
            .min()
    }

    /// The delivery of `user_id`'s head ended at `now`. Delivered: it leaves, and the next may go. Failed: it
    /// waits for a retry, or leaves dropped when it has been failing for the whole retry window.
    pub fn finish(&mut self, user_id: &str, outcome: Outcome, now: Instant) -> Option<Leaving> {
        let line = self.lines.get_mut(user_id)?;
        line.busy = false;
        let head = line.jobs.front_mut()?;
        head.attempts += 1;
        let leaving = match outcome {
            Outcome::Delivered => true,
            Outcome::Failed => {
                let since = *head.failing_since.get_or_insert(now);
                now.duration_since(since) >= self.retry_window
            }
        };
        if !leaving {
            let attempts = head.attempts;
            let delay = backoff(attempts, &mut self.rng);
            line.retry_at = Some(now + delay);
            return None;
        }
        let job = line.jobs.pop_front()?;
        line.retry_at = None;
        if line.jobs.is_empty() {
            self.lines.remove(user_id);
        }
        if outcome == Outcome::Delivered {
            // The receiver answers: what waits for a retry goes now, not after its backoff (up to a minute).
            for line in self.lines.values_mut() {
                line.retry_at = None;
            }
        }
        self.arrivals.remove(&job.seq);
        Some(match outcome {
            Outcome::Delivered => Leaving::Delivered(job.event),
            Outcome::Failed => Leaving::Dropped(job.event),
        })
    }
}

/// The wait after the `attempts`-th failed attempt: `FIRST_BACKOFF × 2^(attempts-1)` capped at [`MAX_BACKOFF`],
/// drawn uniformly from its upper half, so receivers coming back are not hit by every sender at once.
pub fn backoff(attempts: u32, rng: &mut u64) -> Duration {
    let ceiling = FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let fraction = (*rng % 1_000) as u32;
    ceiling / 2 + ceiling / 2 * fraction / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, user: &str) -> WebhookEvent {
        WebhookEvent {
            id: id.into(),
            user_id: user.into(),
            body: "{}".into(),
        }
    }

    fn ids(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.event.id.as_str()).collect()
    }

    #[test]
    fn one_event_per_user_at_a_time_in_order_users_side_by_side() {
        let now = Instant::now();
        let mut q = Queue::new(100, Duration::from_secs(3600), 7);
        for (id, user) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")] {
            assert!(q.push(event(id, user)).is_empty());
        }
        assert_eq!(ids(&q.take_due(now, 10)), ["a1", "b1"]);
        assert!(
            q.take_due(now, 10).is_empty(),
            "heads in flight block their lines"
        );
        assert_eq!(
            q.finish("a", Outcome::Delivered, now),
            Some(Leaving::Delivered(event("a1", "a")))
        );
        assert_eq!(ids(&q.take_due(now, 10)), ["a2"]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn a_failed_event_is_retried_with_growing_delays_and_holds_its_line() {
        let start = Instant::now();
        let mut q = Queue::new(100, Duration::from_secs(3600), 7);
        q.push(event("a1", "a"));
        q.push(event("a2", "a"));
        let mut now = start;
        let mut delays = Vec::new();
        for attempt in 1..=8 {
            let due = q.take_due(now, 10);
            assert_eq!(ids(&due), ["a1"], "attempt {attempt}");
            assert_eq!(due[0].attempts, attempt - 1);
            assert!(q.finish("a", Outcome::Failed, now).is_none());
            assert!(q.take_due(now, 10).is_empty(), "a2 waits behind a1");
            let at = q.next_retry().unwrap();
            delays.push(at - now);
            now = at;
        }
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= FIRST_BACKOFF);
        assert!(delays.windows(2).all(|w| w[1] >= w[0] / 2), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF), "{delays:?}");
        assert!(*delays.last().unwrap() >= MAX_BACKOFF / 2, "{delays:?}");
    }

    #[test]
    fn a_delivery_after_failures_sends_what_waited_for_its_retry_at_once() {
        let now = Instant::now();
        let mut q = Queue::new(100, Duration::from_secs(3600), 7);
        q.push(event("a1", "a"));
        q.push(event("b1", "b"));
        assert_eq!(q.take_due(now, 10).len(), 2);
        q.finish("a", Outcome::Failed, now);
        q.finish("b", Outcome::Failed, now);
        let later = q.next_retry().unwrap();
        assert!(q.take_due(now, 10).is_empty());
        let a_first = q.take_due(later + MAX_BACKOFF, 1);
        let user = a_first[0].event.user_id.clone();
        q.finish(&user, Outcome::Delivered, later);
        assert_eq!(
            q.take_due(later, 10).len(),
            1,
            "the other line goes at once"
        );
    }

    #[test]
    fn an_event_failing_for_the_whole_window_is_dropped_and_the_next_goes() {
        let start = Instant::now();
        let mut q = Queue::new(100, Duration::from_secs(10), 7);
        q.push(event("a1", "a"));
        q.push(event("a2", "a"));
        let mut now = start;
        let dropped = loop {
            assert_eq!(ids(&q.take_due(now, 10)), ["a1"]);
            if let Some(left) = q.finish("a", Outcome::Failed, now) {
                break left;
            }
            now = q.next_retry().unwrap();
        };
        assert_eq!(dropped, Leaving::Dropped(event("a1", "a")));
        assert!(now - start >= Duration::from_secs(10));
        assert_eq!(ids(&q.take_due(now, 10)), ["a2"]);
    }

    #[test]
    fn past_the_bound_the_oldest_waiting_event_is_dropped_never_one_in_flight() {
        let now = Instant::now();
        let mut q = Queue::new(3, Duration::from_secs(3600), 7);
        q.push(event("a1", "a"));
        q.push(event("b1", "b"));
        q.push(event("a2", "a"));
        assert_eq!(ids(&q.take_due(now, 1)), ["a1"]);
        let dropped = q.push(event("c1", "c"));
        assert_eq!(dropped, vec![Leaving::Dropped(event("b1", "b"))]);
        assert_eq!(q.len(), 3);
        assert_eq!(ids(&q.take_due(now, 10)), ["c1"]);
        assert_eq!(
            q.finish("a", Outcome::Delivered, now),
            Some(Leaving::Delivered(event("a1", "a")))
        );
        assert_eq!(ids(&q.take_due(now, 10)), ["a2"]);
    }
}
