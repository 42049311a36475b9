//! Per-user write rate limits: a token bucket for each user token that writes users, so that one user cannot
//! turn their own profile into a stream of events to everyone following them. Answers carry Stream's
//! `X-RateLimit-*` headers; a refusal is 429 with code 9 and `Retry-After`.
//!
//! Server tokens are not limited: the app's backend holds the API secret and may already write any user and
//! create any number of channels; Stream does not subject server-side calls to user limits either, and a
//! backfill of many users would only be slowed down. What a server storm about one user costs a follower is
//! bounded by the send queues instead (a newer state supersedes a queued one).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, ErrorKind};
use crate::model::Caller;

/// Users with a bucket that is not full yet, at most: beyond it a writer without one is refused until older
/// buckets refill. At the default rate a bucket is full again 20 s after its last write, so reaching this takes
/// over 5,000 distinct writers a second.
const MAX_TRACKED_USERS: usize = 100_000;

/// The pace of user writes, and each user's bucket.
pub struct WriteLimits {
    /// Writes a user may make per minute, sustained; 0 turns the limits off.
    per_minute: u32,
    /// Writes a user may make at once after being quiet.
    burst: u32,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_user: HashMap<String, Bucket>,
    /// The size at which full buckets are pruned next: twice what the last pruning left, so that pruning costs
    /// a constant per write however many users write.
    prune_at: usize,
    /// At the tracked maximum, when pruning may be tried again (at most once a second, not on every refusal).
    retry_prune_at: Option<Instant>,
}

/// A user's tokens as of `at`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Where a user stands after a write was let through or refused: what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Writes per minute.
    pub limit: u32,
    /// Writes the user may make right now.
    pub remaining: u32,
    /// How long until the bucket is full again.
    pub full_in: Duration,
    /// How long until the next write is let through (zero when one would be now).
    pub retry_in: Duration,
}

/// A refused write: the error, with the quota for its headers.
pub struct Limited {
    pub quota: Quota,
    pub error: Error,
}

const FIRST_PRUNE: usize = 1024;

impl WriteLimits {
    /// `per_minute` writes a minute sustained, up to `burst` at once; `per_minute` 0 lets every write through.
    pub fn new(per_minute: u32, burst: u32) -> WriteLimits {
        WriteLimits {
            per_minute,
            burst: burst.max(1),
            buckets: Mutex::new(Buckets {
                by_user: HashMap::new(),
                prune_at: FIRST_PRUNE,
                retry_prune_at: None,
            }),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, Buckets> {
        // Nothing under this lock can panic halfway through a change; recover the guard regardless.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Takes one write from `caller`'s bucket at `now`. `None` for callers that are not limited (server tokens,
    /// or limits off); otherwise the quota left, or the refusal.
    pub fn take(&self, caller: &Caller, now: Instant) -> Option<Result<Quota, Limited>> {
        let Caller::User(user_id) = caller else {
            return None;
        };
        if self.per_minute == 0 {
            return None;
        }
        let burst = f64::from(self.burst);
        let rate = self.refill_per_sec();
        let mut buckets = self.buckets();
        let len = buckets.by_user.len();
        let at_max = len >= MAX_TRACKED_USERS && buckets.retry_prune_at.is_none_or(|at| now >= at);
        if len >= buckets.prune_at || at_max {
            buckets
                .by_user
                .retain(|_, b| b.refilled(now, rate, burst) < burst);
            buckets.prune_at = (buckets.by_user.len() * 2).max(FIRST_PRUNE);
            buckets.retry_prune_at = Some(now + Duration::from_secs(1));
        }
        let tracked = buckets.by_user.len();
        let bucket = match buckets.by_user.get_mut(user_id.as_str()) {
            Some(bucket) => bucket,
            None if tracked >= MAX_TRACKED_USERS => {
                let quota = Quota {
                    limit: self.per_minute,
                    remaining: 0,
                    full_in: Duration::from_secs(1),
                    retry_in: Duration::from_secs(1),
                };
                return Some(Err(self.refusal(quota)));
            }
            None => buckets.by_user.entry(user_id.clone()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let tokens = bucket.refilled(now, rate, burst);
        bucket.at = now.max(bucket.at);
        let quota_after = |tokens: f64| {
            let missing = (burst - tokens).max(0.0);
            Quota {
                limit: self.per_minute,
                remaining: tokens.floor() as u32,
                full_in: Duration::from_secs_f64(missing / rate),
                retry_in: Duration::from_secs_f64((1.0 - tokens).max(0.0) / rate),
            }
        };
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Some(Ok(quota_after(bucket.tokens)))
        } else {
            bucket.tokens = tokens;
            Some(Err(self.refusal(quota_after(tokens))))
        }
    }

    fn refusal(&self, quota: Quota) -> Limited {
        Limited {
            quota,
            error: Error::new(
                ErrorKind::RateLimited,
                format!(
                    "Too many requests, check response headers for more information \
                     (a user may make {} user writes a minute, {} at once)",
                    self.per_minute, self.burst
                ),
            ),
        }
    }
}

impl Bucket {
    /// The tokens at `now`: refilled at `rate` a second up to `burst`.
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl Quota {
    /// Adds the `X-RateLimit-*` headers (reset as Unix seconds, as Stream sends it) to `response`.
    pub fn apply(&self, response: &mut Response) {
        let reset = SystemTime::now()
            .checked_add(self.full_in)
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs_f64().ceil() as u64);
        let headers = response.headers_mut();
        headers.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(
            X_RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset));
    }
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        self.quota.apply(&mut response);
        // Whole seconds, rounded up: a client retrying on time is let through.
        let retry = self.quota.retry_in.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Caller {
        Caller::User(id.to_string())
    }

    fn take(limits: &WriteLimits, id: &str, now: Instant) -> Result<Quota, Quota> {
        match limits.take(&user(id), now) {
            Some(Ok(quota)) => Ok(quota),
            Some(Err(limited)) => Err(limited.quota),
            None => panic!("{id} is not limited"),
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limits = WriteLimits::new(60, 20);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(take(&limits, "u", t0).unwrap().remaining, 19 - i);
        }
        let refused = take(&limits, "u", t0).unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_in, Duration::from_secs(1));
        assert_eq!(refused.full_in, Duration::from_secs(20));
        // Others have their own bucket.
        assert!(take(&limits, "v", t0).is_ok());
        // One a second after that.
        let t1 = t0 + Duration::from_millis(1000);
        assert!(take(&limits, "u", t1).is_ok());
        assert!(take(&limits, "u", t1).is_err());
        let t2 = t1 + Duration::from_millis(500);
        assert_eq!(
            take(&limits, "u", t2).unwrap_err().retry_in,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn server_tokens_and_limits_off_are_not_limited() {
        let limits = WriteLimits::new(60, 20);
        assert!(limits.take(&Caller::Server, Instant::now()).is_none());
        let off = WriteLimits::new(0, 20);
        assert!(off.take(&user("u"), Instant::now()).is_none());
    }

    #[test]
    fn full_buckets_are_pruned_so_distinct_writers_do_not_grow_memory() {
        let limits = WriteLimits::new(60, 20);
        let t0 = Instant::now();
        for i in 0..10_000 {
            // Each writer's bucket is full again 1 s after its write (one token spent, one a second back).
            let now = t0 + Duration::from_millis(i);
            assert!(take(&limits, &format!("user-{i}"), now).is_ok());
        }
        let tracked = limits.buckets().by_user.len();
        // At most the writers of the last second, plus what waits for the next pruning (twice that).
        assert!(tracked <= 2 * 1000 + FIRST_PRUNE, "{tracked} buckets kept");
    }

    #[test]
    fn past_the_tracked_maximum_new_writers_wait() {
        let limits = WriteLimits::new(60, 20);
        let t0 = Instant::now();
        {
            let mut buckets = limits.buckets();
            for i in 0..MAX_TRACKED_USERS {
                let bucket = Bucket {
                    tokens: 0.0,
                    at: t0,
                };
                buckets.by_user.insert(format!("user-{i}"), bucket);
            }
            buckets.prune_at = usize::MAX;
        }
        assert!(take(&limits, "newcomer", t0).is_err());
        assert!(take(&limits, "user-1", t0 + Duration::from_secs(1)).is_ok());
    }
}
