//! Shared by `restart` and `churn`: the client's reconnect policy, and observers — connections that follow many
//! users' presence (`queryUsers` with `presence: true`, 100 ids per query) and keep a view of them built from the
//! query results and the events that follow, checking on the way that events about a user arrive in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{connect_first_frame, dev_token, percent_encode, Error, Socket};

/// The reconnect policy of the client (src/core/backoff.rs), in one place so that it can follow the real one:
/// after `failures` consecutive failures (0 right after an established connection drops), wait a uniform random
/// time between a floor of 250 ms and min(25 s, 2.5 s · 2^failures) — full jitter above the floor.
pub fn reconnect_delay(failures: u32, rng: &mut fastrand::Rng) -> Duration {
    const FLOOR_MS: u64 = 250;
    const BASE_MS: u64 = 2_500;
    const CAP_MS: u64 = 25_000;
    let ceiling = BASE_MS.saturating_mul(1u64 << failures.min(16)).min(CAP_MS);
    Duration::from_millis(rng.u64(FLOOR_MS..=ceiling.max(FLOOR_MS)))
}

/// Ids per presence query: the server returns at most 100 users per query (`$in` takes up to 1,000 values), so
/// 100 ids make one query whose single page holds them all.
pub const IDS_PER_QUERY: usize = 100;

/// How long one connection attempt (TCP, upgrade, first frame) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sleeps `delay`, or less if `stop` is set meanwhile; says whether to stop.
pub async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One connection attempt of user `id`, bounded in time: the socket and its first frame.
pub async fn attempt(
    server: &str,
    api_key: &str,
    id: &str,
    n: usize,
) -> Result<(Socket, Value), Error> {
    tokio::time::timeout(ATTEMPT_TIMEOUT, connect_first_frame(server, api_key, id, n))
        .await
        .map_err(|_| format!("{id}: no first frame within {ATTEMPT_TIMEOUT:?}"))?
}

/// `GET /users` for `ids` (at most [`IDS_PER_QUERY`]): with `auth` = `(user id, connection id)` as that user,
/// following their presence on that connection; without, as the server (`token`). Returns id → user object.
pub async fn query_ids(
    http: &reqwest::Client,
    server: &str,
    api_key: &str,
    ids: &[String],
    auth: Result<(&str, &str), &str>,
) -> Result<Vec<Value>, Error> {
    let payload = json!({
        "filter_conditions": { "id": { "$in": ids } },
        "presence": auth.is_ok(),
        "limit": IDS_PER_QUERY,
    });
    let mut url = format!(
        "{server}/users?api_key={api_key}&payload={}",
        percent_encode(&payload.to_string())
    );
    let token = match auth {
        Ok((user, connection)) => {
            url.push_str(&format!("&user_id={user}&connection_id={connection}"));
            dev_token(user)
        }
        Err(server_token) => server_token.to_string(),
    };
    let response = http
        .get(url)
        .header("Authorization", token)
        .header("stream-auth-type", "jwt")
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("queryUsers answered {status}: {body}").into());
    }
    match body["users"].as_array() {
        Some(users) => Ok(users.clone()),
        None => Err(format!("queryUsers: no users in {body}").into()),
    }
}

/// The server's truth about `ids`: id → online, read with a server token.
pub async fn truth(
    http: &reqwest::Client,
    server: &str,
    api_key: &str,
    server_token: &str,
    ids: &[String],
) -> Result<HashMap<String, Value>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        for user in query_ids(http, server, api_key, chunk, Err(server_token)).await? {
            if let Some(id) = user["id"].as_str() {
                out.insert(id.to_string(), user);
            }
        }
    }
    Ok(out)
}

/// What an observer knows of one followed user.
#[derive(Clone, Default)]
struct Seen {
    known: bool,
    online: bool,
    /// The `online` of the last `user.presence.changed` (or of the query result before any).
    presence: bool,
    last_event_at: Option<String>,
}

/// An observer's view and what it noticed, readable while it runs.
#[derive(Default)]
pub struct View {
    /// Successful connections so far (more than one: it reconnected).
    pub connections: u32,
    /// Every query of the current connection was answered (the view is complete).
    pub ready: bool,
    seen: Vec<Seen>,
    pub events: u64,
    pub presence_events: u64,
    pub updated_events: u64,
    /// Events about a user whose `created_at` is earlier than the previous event's about that user.
    pub out_of_order: u64,
    /// `user.presence.changed` events that repeat the previous presence state instead of flipping it.
    pub repeated_flips: u64,
    /// Events about users this observer does not follow.
    pub strays: u64,
    /// A few of the problems, for the report.
    pub examples: Vec<String>,
    /// How its connections ended before it was stopped: the server's close code, or 1006 for a lost connection.
    pub ends: Vec<u16>,
}

impl View {
    /// The targets (by index) whose `online` in this view differs from `expected(index)`, or that are not in it.
    pub fn mismatches(&self, expected: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.seen.len())
            .filter(|&i| !self.seen[i].known || self.seen[i].online != expected(i))
            .collect()
    }

    fn note(&mut self, problem: String) {
        if self.examples.len() < 5 {
            self.examples.push(problem);
        }
    }

    /// Applies one event received by observer `own` (events about itself are not part of the view).
    fn apply(&mut self, own: &str, index: &HashMap<String, usize>, event: &Value) {
        let kind = event["type"].as_str().unwrap_or_default();
        if kind == "closed" {
            self.ends.push(event["code"].as_u64().unwrap_or(0) as u16);
            return;
        }
        let presence = kind == "user.presence.changed";
        let user = &event["user"];
        let id = user["id"].as_str().unwrap_or_default();
        if (!presence && kind != "user.updated") || id == own {
            return;
        }
        self.events += 1;
        if presence {
            self.presence_events += 1;
        } else {
            self.updated_events += 1;
        }
        let Some(&i) = index.get(id) else {
            self.strays += 1;
            return;
        };
        let online = user["online"].as_bool().unwrap_or(false);
        let created_at = event["created_at"].as_str().map(str::to_string);
        let (previous_at, previous_presence) = {
            let seen = &self.seen[i];
            (seen.last_event_at.clone(), seen.presence)
        };
        if let (Some(previous), Some(now)) = (&previous_at, &created_at) {
            // The server writes event times in one fixed RFC 3339 form (UTC, 9 digits): text order is time order.
            if now < previous {
                self.out_of_order += 1;
                self.note(format!(
                    "{kind} about {id} created at {now} arrived after one created at {previous}"
                ));
            }
        }
        if presence && online == previous_presence {
            self.repeated_flips += 1;
            self.note(format!(
                "{id}: user.presence.changed online={online} repeats the previous state"
            ));
        }
        let seen = &mut self.seen[i];
        if created_at.is_some() {
            seen.last_event_at = created_at;
        }
        seen.known = true;
        seen.online = online;
        if presence {
            seen.presence = online;
        }
    }
}

/// Who an observer is and whom it follows.
pub struct Observer {
    pub server: String,
    pub api_key: String,
    pub id: String,
    /// The source-address slot of its socket (see `source_addr`).
    pub n: usize,
    pub targets: Arc<Vec<String>>,
    pub index: Arc<HashMap<String, usize>>,
    pub http: reqwest::Client,
    pub seed: u64,
}

/// Index of each target id.
pub fn index_of(targets: &[String]) -> HashMap<String, usize> {
    targets
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect()
}

/// Reads a socket until it ends or `stop` is set (then closes it), handing presence-related events to `events`.
fn spawn_event_reader(
    mut ws: Socket,
    events: mpsc::UnboundedSender<Value>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return;
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(event) = serde_json::from_str::<Value>(text.as_str()) {
                            if events.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        let _ = events.send(json!({ "type": "closed", "code": code }));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        let _ = events.send(json!({ "type": "closed", "code": 1006 }));
                        return;
                    }
                }
            }
        }
    })
}

/// Runs an observer until `stop`: connects (with the client's backoff), follows every target, applies events;
/// when its connection drops, reconnects and follows everyone again on the new connection, starting a new view.
pub async fn observe(o: Observer, view: Arc<Mutex<View>>, mut stop: watch::Receiver<bool>) {
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        // A failed attempt leaves `failures` as it is: it counts below, with the delay it causes.
        if let Ok((ws, first)) = attempt(&o.server, &o.api_key, &o.id, o.n).await {
            failures = 0;
            let connection_id = first["connection_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let reader = spawn_event_reader(ws, tx, stop.clone());
            if let Ok(mut v) = view.lock() {
                v.connections += 1;
                v.ready = false;
                v.seen = vec![Seen::default(); o.targets.len()];
            }
            let mut followed = true;
            'chunks: for chunk in o.targets.chunks(IDS_PER_QUERY) {
                let auth = Ok((o.id.as_str(), connection_id.as_str()));
                let mut tries = 0;
                let users = loop {
                    match query_ids(&o.http, &o.server, &o.api_key, chunk, auth).await {
                        Ok(users) => break users,
                        Err(_) if tries < 3 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(_) => {
                            followed = false;
                            break 'chunks;
                        }
                    }
                };
                let Ok(mut v) = view.lock() else { return };
                for user in users {
                    let Some(&i) = user["id"].as_str().and_then(|id| o.index.get(id)) else {
                        continue;
                    };
                    let online = user["online"].as_bool().unwrap_or(false);
                    v.seen[i] = Seen {
                        known: true,
                        online,
                        presence: online,
                        last_event_at: None,
                    };
                }
            }
            if followed {
                // Events about a user can only follow that user's query (the follow starts with its answer), so
                // everything queued so far applies on top of the results, in arrival order.
                if let Ok(mut v) = view.lock() {
                    v.ready = true;
                }
                while let Some(event) = rx.recv().await {
                    let Ok(mut v) = view.lock() else { return };
                    v.apply(&o.id, &o.index, &event);
                }
            }
            reader.abort();
        }
        let delay = reconnect_delay(failures, &mut rng);
        failures = failures.saturating_add(1);
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}
