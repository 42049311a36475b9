//! A churn soak: `clients` simulated users connect, disconnect (closing with 1000, or dropping the TCP connection
//! without a close frame), go invisible and back (partial update) at random for `secs`, while `observers` follow
//! all of them. After the churn and a settle time longer than the server's grace window, every observer's view
//! (its query results plus the events that followed, in arrival order) must equal the server's truth (a query with
//! a server token); events about a user must arrive in `created_at` order and presence must flip, never repeat.
//! Then every client leaves, and the views are compared again (everyone offline) and the server's RSS is read
//! against its baseline (observers connected, no clients).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::follow::{self, attempt, observe, Observer, View};
use super::{dev_token, rss_bytes, Error, Socket};

/// What one run is asked to do.
pub struct Params {
    pub server: String,
    pub api_key: String,
    pub server_token: String,
    /// The server's process id (its RSS is read from /proc).
    pub pid: u32,
    pub clients: usize,
    pub observers: usize,
    pub secs: u64,
    /// Each client waits a uniform random time in [0, 2 × this] between actions.
    pub mean_pause_ms: u64,
    /// How long to wait after the churn (and after everyone left) before comparing; longer than the grace window.
    pub settle_secs: u64,
    pub seed: u64,
    /// Churn rounds, one after the other on the same server (each ends with every client gone): RSS after each
    /// round tells memory kept for reuse (flat after the first) from memory that grows (a leak).
    pub rounds: usize,
}

/// What the clients did, counted.
#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    closes: AtomicU64,
    drops: AtomicU64,
    invisible_on: AtomicU64,
    invisible_off: AtomicU64,
    update_failures: AtomicU64,
    closed_by_server: AtomicU64,
    /// Close codes of the connections the server ended (1006: lost without a close frame).
    close_codes: Mutex<HashMap<u16, u64>>,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "connects": get(&self.connects),
            "connect_failures": get(&self.connect_failures),
            "closes": get(&self.closes),
            "drops": get(&self.drops),
            "invisible_on": get(&self.invisible_on),
            "invisible_off": get(&self.invisible_off),
            "update_failures": get(&self.update_failures),
            "closed_by_server": get(&self.closed_by_server),
            "close_codes": self.close_codes.lock().map(|m| json!(*m)).unwrap_or_default(),
        })
    }
}

struct Ctx {
    server: String,
    api_key: String,
    http: reqwest::Client,
    counters: Counters,
}

/// The source-address slot of client `n`: spread over 32 loopback addresses, so that the many short connections
/// of a run do not exhaust one address's ephemeral ports.
fn slot(n: usize) -> usize {
    (n % 32) * 10_000
}

/// Reads the socket (answering pings, discarding frames) for `pause`, or until `until` is set; forgets it when
/// the server ends it.
async fn read_for(
    ctx: &Ctx,
    ws: &mut Option<Socket>,
    pause: Duration,
    until: &mut watch::Receiver<bool>,
) {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        let Some(socket) = ws.as_mut() else {
            tokio::select! {
                _ = &mut sleep => return,
                _ = until.changed() => return,
            }
        };
        tokio::select! {
            _ = &mut sleep => return,
            _ = until.changed() => return,
            message = socket.next() => {
                let code = match message {
                    Some(Ok(Message::Close(frame))) => frame.map_or(1005, |f| u16::from(f.code)),
                    Some(Err(_)) | None => 1006,
                    Some(Ok(_)) => continue,
                };
                Counters::bump(&ctx.counters.closed_by_server);
                if let Ok(mut codes) = ctx.counters.close_codes.lock() {
                    *codes.entry(code).or_default() += 1;
                }
                *ws = None;
            }
        }
    }
}

async fn close(ws: Socket) {
    let mut ws = ws;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

async fn set_invisible(ctx: &Ctx, id: &str, invisible: bool) -> bool {
    let response = ctx
        .http
        .patch(format!(
            "{}/users?api_key={}&user_id={id}",
            ctx.server, ctx.api_key
        ))
        .header("Authorization", dev_token(id))
        .header("stream-auth-type", "jwt")
        .json(&json!({ "users": [{ "id": id, "set": { "invisible": invisible } }] }))
        .send()
        .await;
    matches!(response, Ok(r) if r.status().is_success())
}

/// One simulated client: random actions until `deadline`, then holds its state until `leave`, then leaves
/// (even clients close with 1000, odd ones drop the connection).
async fn churner(
    ctx: Arc<Ctx>,
    id: String,
    n: usize,
    seed: u64,
    mean_pause_ms: u64,
    deadline: Instant,
    mut leave: watch::Receiver<bool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ws: Option<Socket> = None;
    let mut invisible = false;
    let c = &ctx.counters;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let pause = Duration::from_millis(rng.u64(0..=2 * mean_pause_ms)).min(deadline - now);
        read_for(&ctx, &mut ws, pause, &mut leave).await;
        if Instant::now() >= deadline || *leave.borrow() {
            break;
        }
        let roll = rng.u8(0..10);
        let toggle = match ws.take() {
            None if roll < 7 => {
                match attempt(&ctx.server, &ctx.api_key, &id, slot(n)).await {
                    Ok((socket, _)) => {
                        Counters::bump(&c.connects);
                        ws = Some(socket);
                    }
                    Err(_) => Counters::bump(&c.connect_failures),
                }
                false
            }
            None => true,
            Some(socket) if roll < 3 => {
                Counters::bump(&c.closes);
                close(socket).await;
                false
            }
            Some(socket) if roll < 5 => {
                Counters::bump(&c.drops);
                drop(socket);
                false
            }
            Some(socket) => {
                ws = Some(socket);
                true
            }
        };
        if toggle {
            if set_invisible(&ctx, &id, !invisible).await {
                invisible = !invisible;
                Counters::bump(if invisible {
                    &c.invisible_on
                } else {
                    &c.invisible_off
                });
            } else {
                Counters::bump(&c.update_failures);
            }
        }
    }
    while !*leave.borrow() {
        read_for(&ctx, &mut ws, Duration::from_secs(3600), &mut leave).await;
    }
    if let Some(socket) = ws {
        if n.is_multiple_of(2) {
            close(socket).await;
        }
    }
}

/// Creates the users (server token, 100 per request) so that the observers can follow them from the start.
async fn seed_users(p: &Params, http: &reqwest::Client, ids: &[String]) -> Result<(), Error> {
    for chunk in ids.chunks(100) {
        let users: serde_json::Map<String, Value> = chunk
            .iter()
            .map(|id| (id.clone(), json!({ "id": id })))
            .collect();
        let response = http
            .post(format!("{}/users?api_key={}", p.server, p.api_key))
            .header("Authorization", &p.server_token)
            .header("stream-auth-type", "jwt")
            .json(&json!({ "users": users }))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("creating users answered {}", response.status()).into());
        }
    }
    Ok(())
}

/// Compares every observer's view with the server's truth: observers whose view is complete and equal,
/// differences in the complete views, observers still following everyone again, users the truth shows online.
async fn compare(
    p: &Params,
    http: &reqwest::Client,
    ids: &[String],
    views: &[Arc<Mutex<View>>],
) -> Result<Value, Error> {
    // An observer that reconnected follows everyone again: compare complete views (waiting up to 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !views.iter().all(|v| v.lock().is_ok_and(|v| v.ready)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let truth: HashMap<String, Value> =
        follow::truth(http, &p.server, &p.api_key, &p.server_token, ids).await?;
    let online: Vec<bool> = ids
        .iter()
        .map(|id| {
            truth
                .get(id)
                .and_then(|u| u["online"].as_bool())
                .unwrap_or(false)
        })
        .collect();
    let mut equal = 0;
    let mut differences = 0;
    let mut incomplete = 0;
    for view in views {
        let v = view.lock().map_err(|_| "view poisoned")?;
        if !v.ready {
            incomplete += 1;
            continue;
        }
        let wrong = v.mismatches(|i| online[i]).len();
        if wrong == 0 {
            equal += 1;
        }
        differences += wrong;
    }
    Ok(json!({
        "observers_equal": equal,
        "converged": equal == views.len(),
        "differences": differences,
        "observers_incomplete": incomplete,
        "online_in_truth": online.iter().filter(|o| **o).count(),
        "users_in_truth": truth.len(),
    }))
}

/// The comparisons named `key` of every round as one: converged if each was, differences summed.
fn merged(rounds: &[Value], key: &str) -> Value {
    let all = || rounds.iter().map(|r| &r[key]);
    let total = |field: &str| all().filter_map(|c| c[field].as_u64()).sum::<u64>();
    json!({
        "converged": all().all(|c| c["converged"] == json!(true)),
        "differences": total("differences"),
        "observers_incomplete": total("observers_incomplete"),
        "online_in_truth": rounds.last().map_or(Value::Null, |r| r[key]["online_in_truth"].clone()),
    })
}

/// How the observers' connections ended, by close code.
pub fn close_codes(views: &[Arc<Mutex<View>>]) -> Value {
    let mut codes: HashMap<u16, u64> = HashMap::new();
    for view in views {
        if let Ok(v) = view.lock() {
            for code in &v.ends {
                *codes.entry(*code).or_default() += 1;
            }
        }
    }
    json!(codes)
}

pub async fn run(p: Params) -> Result<Value, Error> {
    let http = super::http_client();
    let ids: Vec<String> = (0..p.clients).map(|n| format!("ch-{n:05}")).collect();
    seed_users(&p, &http, &ids).await?;
    let rss_start = rss_bytes(p.pid)?;

    let (stop_tx, stop) = watch::channel(false);
    let targets = Arc::new(ids.clone());
    let index = Arc::new(follow::index_of(&ids));
    let views: Vec<Arc<Mutex<View>>> = (0..p.observers).map(|_| Arc::default()).collect();
    let mut observers = Vec::new();
    let gate = Arc::new(Semaphore::new(16));
    let follow_started = Instant::now();
    for (k, view) in views.iter().enumerate() {
        let o = Observer {
            server: p.server.clone(),
            api_key: p.api_key.clone(),
            id: format!("ch-observer-{k}"),
            n: slot(k),
            targets: Arc::clone(&targets),
            index: Arc::clone(&index),
            http: http.clone(),
            seed: p.seed.wrapping_add(1_000_000 + k as u64),
        };
        // At most 16 observers running their queries at once.
        let permit = gate.clone().acquire_owned().await?;
        let view = Arc::clone(view);
        let ready = Arc::clone(&view);
        observers.push(tokio::spawn(observe(o, view, stop.clone())));
        tokio::spawn(async move {
            while !ready.lock().is_ok_and(|v| v.ready) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(permit);
        });
    }
    let all_ready = || views.iter().all(|v| v.lock().is_ok_and(|v| v.ready));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_ready() {
        if Instant::now() > deadline {
            return Err("the observers did not finish following everyone within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follow_secs = follow_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_bytes(p.pid)?;

    // RSS sampled during the run.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (sampling, peak, pid) = (Arc::clone(&sampling), Arc::clone(&peak), p.pid);
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let ctx = Arc::new(Ctx {
        server: p.server.clone(),
        api_key: p.api_key.clone(),
        http: http.clone(),
        counters: Counters::default(),
    });
    let events_now = || -> u64 { views.iter().map(|v| v.lock().map_or(0, |v| v.events)).sum() };
    let mut churn_secs = 0.0;
    let mut events_during = 0;
    let mut rounds = Vec::new();
    for round in 0..p.rounds.max(1) {
        let (leave_tx, leave) = watch::channel(false);
        let events_before = events_now();
        let started = Instant::now();
        let churn_deadline = started + Duration::from_secs(p.secs);
        let seed = p
            .seed
            .wrapping_add(round as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let churners: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                tokio::spawn(churner(
                    Arc::clone(&ctx),
                    id.clone(),
                    n,
                    seed.wrapping_add(n as u64),
                    p.mean_pause_ms,
                    churn_deadline,
                    leave.clone(),
                ))
            })
            .collect();
        tokio::time::sleep_until(churn_deadline.into()).await;
        churn_secs += started.elapsed().as_secs_f64();
        events_during += events_now() - events_before;
        tokio::time::sleep(Duration::from_secs(p.settle_secs)).await;
        let after_churn = compare(&p, &http, &ids, &views).await?;

        leave_tx.send(true)?;
        for task in churners {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        tokio::time::sleep(Duration::from_secs(p.settle_secs)).await;
        let after_leave = compare(&p, &http, &ids, &views).await?;
        rounds.push(json!({
            "after_churn": after_churn,
            "after_leave": after_leave,
            "rss_peak": peak.load(Ordering::Relaxed),
            "rss_after": rss_bytes(p.pid)?,
        }));
    }
    let rss_after = rss_bytes(p.pid)?;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let after_churn = merged(&rounds, "after_churn");
    let after_leave = merged(&rounds, "after_leave");

    let sum =
        |f: fn(&View) -> u64| -> u64 { views.iter().map(|v| v.lock().map_or(0, |v| f(&v))).sum() };
    let events = sum(|v| v.events);
    let report = json!({
        "clients": p.clients,
        "observers": p.observers,
        "secs": p.secs,
        "rounds": rounds,
        "churn_secs": churn_secs,
        "seed": p.seed,
        "mean_pause_ms": p.mean_pause_ms,
        "settle_secs": p.settle_secs,
        "follow_secs": follow_secs,
        "actions": ctx.counters.report(),
        "events": events,
        "events_during_churn": events_during,
        "events_per_sec": events_during as f64 / churn_secs,
        "presence_events": sum(|v| v.presence_events),
        "updated_events": sum(|v| v.updated_events),
        "out_of_order": sum(|v| v.out_of_order),
        "repeated_flips": sum(|v| v.repeated_flips),
        "strays": sum(|v| v.strays),
        "observer_reconnects": sum(|v| u64::from(v.connections.saturating_sub(1))),
        "observer_close_codes": close_codes(&views),
        "after_churn": after_churn,
        "after_leave": after_leave,
        "event_problems": views.iter().filter_map(|v| v.lock().ok().map(|v| v.examples.clone()))
            .flatten().take(5).collect::<Vec<_>>(),
        "rss_start": rss_start,
        "rss_before": rss_before,
        "rss_peak": peak.load(Ordering::Relaxed),
        "rss_after": rss_after,
    });
    stop_tx.send(true)?;
    for task in observers {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(report)
}
