//! Webhook delivery: every event the engine put in the outbox goes to the app's webhook URL as one signed `POST`,
//! in Stream's format (body: the event JSON; `X-Signature`: hex HMAC-SHA256 of the body with the API secret;
//! `X-Api-Key`; `X-Webhook-Id`, the same on every attempt; `X-Webhook-Attempt`). A 2xx acknowledges: the event
//! leaves the outbox in the hub's next commit. Anything else is retried ([`queue`]). Delivery runs on its own task
//! and never holds up presence: the hub hands it what it committed and goes on.
//!
//! The outbox is the store's: events are written in the commit of the change they tell of ([`Announcing`] tells
//! this task about them once that commit is durable), and those not acknowledged when a process stops are loaded
//! and sent again by the next one — at least once, duplicates told apart by `X-Webhook-Id`.

pub mod queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;

use self::queue::{Job, Leaving, Outcome, Queue};
use crate::hub::Hub;
use crate::model::{WebhookEvent, Write};
use crate::store::{Stamped, Store, StoreError};

/// Deliveries in flight at once (to different users: one user's events go one after the other).
const CONCURRENCY: usize = 32;
/// How long an event is retried before it is dropped.
const RETRY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How delivery is set up.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub api_key: String,
    pub api_secret: String,
    /// One attempt's limit, from the request to the response's status.
    pub timeout: Duration,
    /// Events waiting at most; past it the oldest is dropped.
    pub outbox_max: usize,
}

/// What operators read at `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    /// Attempts that failed (a status other than 2xx, a timeout, a refused connection).
    pub failed: AtomicU64,
    /// Events given up: still failing after the retry window, or pushed out of a full outbox.
    pub dropped: AtomicU64,
    /// Events waiting, in flight included.
    pub depth: AtomicU64,
    /// Time from the change (the event's `created_at`) to its acknowledgement, summed over acknowledged events.
    pub delay_ms_sum: AtomicU64,
}

/// The store, telling the delivery task about the webhook events of each commit once it is durable.
pub struct Announcing {
    inner: Box<dyn Store>,
    committed: UnboundedSender<Vec<WebhookEvent>>,
}

impl Announcing {
    pub fn new(inner: Box<dyn Store>, committed: UnboundedSender<Vec<WebhookEvent>>) -> Announcing {
        Announcing { inner, committed }
    }
}

impl Store for Announcing {
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        self.inner.commit(writes)?;
        let events: Vec<WebhookEvent> = writes
            .iter()
            .filter_map(|stamped| match &stamped.write {
                Write::Webhook(event) => Some((**event).clone()),
                _ => None,
            })
            .collect();
        if !events.is_empty() {
            let _ = self.committed.send(events);
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn set_node(&mut self, node: &str) {
        self.inner.set_node(node);
    }

    /// Adopts `node`'s undelivered events and hands them to the delivery task.
    fn adopt_outbox(&mut self, node: &str) -> Result<Vec<WebhookEvent>, StoreError> {
        let events = self.inner.adopt_outbox(node)?;
        if !events.is_empty() {
            tracing::info!(
                node,
                events = events.len(),
                "webhooks: adopted the undelivered events of a node"
            );
            let _ = self.committed.send(events.clone());
        }
        Ok(events)
    }
}

/// Starts delivering: first `waiting` (what the outbox held at start, oldest first), then what `committed`
/// brings. Ends when the store is gone.
pub fn spawn(
    settings: WebhookSettings,
    hub: Arc<Hub>,
    waiting: Vec<WebhookEvent>,
    committed: UnboundedReceiver<Vec<WebhookEvent>>,
    stats: Arc<WebhookStats>,
) {
    tokio::spawn(run(settings, hub, waiting, committed, stats));
}

async fn run(
    settings: WebhookSettings,
    hub: Arc<Hub>,
    waiting: Vec<WebhookEvent>,
    mut committed: UnboundedReceiver<Vec<WebhookEvent>>,
    stats: Arc<WebhookStats>,
) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .user_agent(concat!("presence-server/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client, nothing will be delivered");
            return;
        }
    };
    let seed = u64::from(Utc::now().timestamp_subsec_nanos()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut queue = Queue::new(settings.outbox_max, RETRY_WINDOW, seed);
    let mut done = Vec::new();
    for event in waiting {
        settle_leaving(queue.push(event), &mut done, &stats);
    }
    let mut flights: JoinSet<(String, Outcome)> = JoinSet::new();
    loop {
        let room = CONCURRENCY.saturating_sub(flights.len());
        for job in queue.take_due(Instant::now(), room) {
            let url = hub.webhook_url();
            flights.spawn(deliver(client.clone(), url, job, settings.clone()));
        }
        stats.depth.store(queue.len() as u64, Ordering::Relaxed);
        hub.webhooks_done(std::mem::take(&mut done));
        let retry = queue.next_retry();
        tokio::select! {
            events = committed.recv() => match events {
                Some(events) => {
                    for event in events {
                        settle_leaving(queue.push(event), &mut done, &stats);
                    }
                }
                // The store is gone: the server stops. What was not acknowledged stays in the outbox.
                None => return,
            },
            Some(Ok((user_id, outcome))) = flights.join_next(), if !flights.is_empty() => {
                if outcome == Outcome::Failed {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(leaving) = queue.finish(&user_id, outcome, Instant::now()) {
                    settle_leaving(vec![leaving], &mut done, &stats);
                }
            }
            () = sleep_until(retry), if retry.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Counts what left the queue and notes it for deletion from the outbox.
fn settle_leaving(leaving: Vec<Leaving>, done: &mut Vec<String>, stats: &WebhookStats) {
    for leaving in leaving {
        match leaving {
            Leaving::Delivered(event) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(created) = created_at(&event.body) {
                    let delay = (Utc::now() - created).num_milliseconds().max(0) as u64;
                    stats.delay_ms_sum.fetch_add(delay, Ordering::Relaxed);
                }
                done.push(event.id);
            }
            Leaving::Dropped(event) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %event.id, user = %event.user_id, "webhooks: an event was dropped");
                done.push(event.id);
            }
        }
    }
}

fn created_at(body: &str) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Created {
        created_at: Option<String>,
    }
    let text = serde_json::from_str::<Created>(body).ok()?.created_at?;
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// One attempt: the event's user and whether a 2xx acknowledged it.
async fn deliver(
    client: reqwest::Client,
    url: Option<Arc<str>>,
    job: Job,
    settings: WebhookSettings,
) -> (String, Outcome) {
    let Job {
        event, attempts, ..
    } = job;
    let Some(url) = url else {
        // No receiver configured (any more): retried, in case one is set.
        return (event.user_id, Outcome::Failed);
    };
    let sent = client
        .post(url.as_ref())
        .header("Content-Type", "application/json")
        .header("X-Signature", signature(&settings.api_secret, &event.body))
        .header("X-Api-Key", &settings.api_key)
        .header("X-Webhook-Id", &event.id)
        .header("X-Webhook-Attempt", (attempts + 1).to_string())
        .body(event.body)
        .send()
        .await;
    let outcome = match sent {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => {
            tracing::debug!(status = %response.status(), "webhooks: the receiver refused an event");
            Outcome::Failed
        }
        Err(e) => {
            tracing::debug!(error = %e, "webhooks: an event did not reach the receiver");
            Outcome::Failed
        }
    };
    (event.user_id, outcome)
}

/// `X-Signature`: the hex HMAC-SHA256 of `body` keyed with the API secret, what Stream's SDKs verify.
pub fn signature(secret: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_delay_is_read_from_the_event() {
        let at =
            created_at(r#"{"type":"user.presence.changed","created_at":"2026-12-08T01:02:03.5Z"}"#);
        let expected = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 8, 1, 2, 3).unwrap()
            + chrono::TimeDelta::milliseconds(500);
        assert_eq!(at, Some(expected));
    }
}
