//! Queries under load: while `loopers` clients run unpinned `queryUsers` and `queryChannels` back to back over a
//! large store, idle probe connections time their `health.check` round trips. A server that does O(N) work while
//! holding what pings and connects need shows it here as probe latency (and, past the pong timeout, as probes
//! closed with 4002).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{connect_user, open_many, percent_encode, summary, Error};

/// What one run is asked to do.
pub struct Params {
    pub server: String,
    pub api_key: String,
    pub server_token: String,
    pub users: usize,
    pub channels: usize,
    pub probes: usize,
    pub loopers: usize,
    pub secs: u64,
    pub skip_seed: bool,
}

const USER_BATCH: usize = 100;
const MEMBERS_PER_CHANNEL: usize = 5;

fn seed_user(n: usize) -> (String, Value) {
    let id = format!("qu-{n:06}");
    // `tier` mixes types on purpose: sorting on it exercises the comparator's order across types.
    let tier = match n % 4 {
        0 => json!(n % 97),
        1 => json!(format!("t{}", n % 89)),
        2 => json!(n.is_multiple_of(2)),
        _ => Value::Null,
    };
    let user = json!({
        "id": id,
        "name": format!("Query user {n}"),
        "status": format!("Status line number {n} of the query-load benchmark"),
        "score": (n * 7919) % 10_000,
        "tier": tier,
        "group": format!("g{}", n % 50),
    });
    (id, user)
}

async fn check(response: reqwest::Response, what: &str) -> Result<Value, Error> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{what}: HTTP {status}: {body}").into());
    }
    Ok(body)
}

async fn seed(http: &reqwest::Client, p: &Params) -> Result<f64, Error> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for first in (0..p.users).step_by(USER_BATCH) {
        let permit = gate.clone().acquire_owned().await?;
        let users: serde_json::Map<String, Value> = (first..(first + USER_BATCH).min(p.users))
            .map(seed_user)
            .collect();
        let request = http
            .post(format!("{}/users?api_key={}", p.server, p.api_key))
            .header("Authorization", &p.server_token)
            .header("stream-auth-type", "jwt")
            .json(&json!({ "users": users }));
        tasks.push(tokio::spawn(async move {
            let result = check(request.send().await?, "seeding users").await;
            drop(permit);
            result
        }));
    }
    for task in tasks.drain(..) {
        task.await??;
    }
    for c in 0..p.channels {
        let permit = gate.clone().acquire_owned().await?;
        let members: Vec<String> = (0..MEMBERS_PER_CHANNEL)
            .map(|k| format!("qu-{:06}", (c * 13 + k * 1777) % p.users.max(1)))
            .collect();
        let request = http
            .post(format!(
                "{}/channels/messaging/qc-{c:05}/query?api_key={}",
                p.server, p.api_key
            ))
            .header("Authorization", &p.server_token)
            .header("stream-auth-type", "jwt")
            .json(&json!({
                "data": { "members": members, "topic": format!("topic {}", c % 40),
                          "rank": (c * 31) % 1000 },
                "state": true, "watch": false, "presence": false
            }));
        tasks.push(tokio::spawn(async move {
            let result = check(request.send().await?, "seeding channels").await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One probe's findings.
#[derive(Default)]
struct ProbeLog {
    rtt_ms: Vec<f64>,
    closed_with: Option<u16>,
    lost: bool,
}

/// A probe connection: a `health.check` every second, each reply timed; ends at `stop` or when the server closes.
async fn probe(p: Arc<Params>, n: usize, stop: Arc<AtomicBool>) -> Result<ProbeLog, Error> {
    let id = format!("qprobe-{n}");
    let (ws, connection_id) = connect_user(&p.server, &p.api_key, &id, n).await?;
    let (mut sink, mut source) = ws.split();
    let mut log = ProbeLog::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sent_at: Option<Instant> = None;
    let ping = json!([{ "type": "health.check", "client_id": connection_id }]).to_string();
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = sink.send(Message::Close(None)).await;
            return Ok(log);
        }
        tokio::select! {
            _ = tick.tick() => {
                if sent_at.is_none() {
                    sink.send(Message::Text(ping.clone().into())).await?;
                    sent_at = Some(Instant::now());
                }
            }
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str().contains("\"health.check\"") {
                        if let Some(at) = sent_at.take() {
                            log.rtt_ms.push(at.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    log.closed_with = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    return Ok(log);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    log.lost = true;
                    return Ok(log);
                }
            }
        }
    }
}

/// The kinds of query timed, in the order of [`Latencies`].
const KINDS: [&str; 3] = ["users_unpinned", "channels_unpinned", "users_pinned"];

/// Query latencies (ms) by kind.
type Latencies = Arc<Mutex<[Vec<f64>; 3]>>;

fn pinned_ids(p: &Params, round: usize) -> Vec<String> {
    (0..30)
        .map(|k| format!("qu-{:06}", (round * 30 + k * 331) % p.users.max(1)))
        .collect()
}

async fn query(http: &reqwest::Client, p: &Params, kind: usize, round: usize) -> Result<(), Error> {
    let users = |payload: Value| {
        http.get(format!(
            "{}/users?api_key={}&payload={}",
            p.server,
            p.api_key,
            percent_encode(&payload.to_string())
        ))
    };
    let request = match kind {
        0 => users(json!({
            "filter_conditions": { "score": { "$gte": (round * 37) % 5000 } },
            "sort": [{ "field": "tier", "direction": 1 }, { "field": "score", "direction": -1 }],
            "limit": 30,
        })),
        1 => http
            .post(format!("{}/channels?api_key={}", p.server, p.api_key))
            .json(&json!({
                "filter_conditions": { "type": "messaging" },
                "sort": [{ "field": "rank", "direction": -1 }],
                "limit": 30, "state": true, "watch": false, "presence": false,
            })),
        _ => users(json!({
            "filter_conditions": { "id": { "$in": pinned_ids(p, round) } },
            "sort": [{ "field": "last_active", "direction": -1 }],
            "limit": 30,
        })),
    };
    let request = request
        .header("Authorization", &p.server_token)
        .header("stream-auth-type", "jwt");
    check(request.send().await?, KINDS[kind]).await?;
    Ok(())
}

/// One query looper: loops `kinds` in turn until `stop`.
async fn looper(
    http: reqwest::Client,
    p: Arc<Params>,
    kinds: Vec<usize>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    latencies: Latencies,
) -> Result<(), Error> {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let kind = kinds[round % kinds.len()];
        let t0 = Instant::now();
        query(&http, &p, kind, round).await?;
        latencies.lock().map_err(|_| "latency log poisoned")?[kind]
            .push(t0.elapsed().as_secs_f64() * 1e3);
        if kind != 2 {
            done.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
    }
    Ok(())
}

pub async fn run(p: Params) -> Result<Value, Error> {
    let http = super::http_client();
    let seed_secs = if p.skip_seed {
        0.0
    } else {
        seed(&http, &p).await?
    };
    let p = Arc::new(p);
    let stop = Arc::new(AtomicBool::new(false));
    // Probes first, so that every probe is connected and answering before the load starts.
    let probes = open_many(p.probes, 16, |n| {
        let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
        async move { Ok(tokio::spawn(probe(p, n, stop))) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let done = Arc::new(AtomicU64::new(0));
    let latencies: Latencies = Arc::new(Mutex::new(Default::default()));
    // The unpinned loopers alternate users and channels; one more client loops pinned queries (`id $in` of 30),
    // the usual presence query, to show what the load does to it.
    let plans = (0..p.loopers)
        .map(|k| if k % 2 == 0 { vec![0, 1] } else { vec![1, 0] })
        .chain([vec![2]]);
    let loopers: Vec<_> = plans
        .map(|kinds| {
            tokio::spawn(looper(
                http.clone(),
                Arc::clone(&p),
                kinds,
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&latencies),
            ))
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for l in loopers {
        l.await??;
    }
    let mut rtt = Vec::new();
    let mut closes: Vec<u16> = Vec::new();
    let mut lost = 0usize;
    for handle in probes {
        let log = handle.await??;
        rtt.extend(log.rtt_ms);
        closes.extend(log.closed_with);
        lost += usize::from(log.lost);
    }
    let mut by_kind = latencies
        .lock()
        .map_err(|_| "latency log poisoned")?
        .clone();
    let mut unpinned: Vec<f64> = by_kind[0].iter().chain(&by_kind[1]).copied().collect();
    let kinds: serde_json::Map<String, Value> = KINDS
        .iter()
        .zip(by_kind.iter_mut())
        .map(|(name, values)| (name.to_string(), summary(values)))
        .collect();
    let queries = done.load(Ordering::Relaxed);
    Ok(json!({
        "users": p.users,
        "channels": p.channels,
        "probes": p.probes,
        "loopers": p.loopers,
        "secs": p.secs,
        "seed_secs": seed_secs,
        "health_check_ms": summary(&mut rtt),
        "probes_closed": closes.len(),
        "closed_4002": closes.iter().filter(|&&c| c == 4002).count(),
        "close_codes": closes,
        "probes_lost": lost,
        "queries": queries,
        "queries_per_sec": queries as f64 / elapsed,
        "query_ms": summary(&mut unpinned),
        "query_ms_by_kind": kinds,
    }))
}
