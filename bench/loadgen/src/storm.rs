//! A presence storm: `users` users each flip once (`invisible` turned on by a partial update with a server token,
//! one request per user), the flips spread evenly over `spread_ms`, while `watchers` connections each follow all of
//! them (`queryUsers` with `presence: true`, 100 ids a query: the server answers at most 100 users a page, and
//! follows the users it answers). With `batch_ms` N > 0 the watchers connect with `batch_ms=N` and every frame
//! after their first is an array of events.
//!
//! Measured from just before the first flip until every watcher has every flip (or `wait_secs` passed): the
//! server's CPU time (utime + stime of /proc/PID/stat) per event delivered (events inside arrays counted one by
//! one), frames and events per watcher, the delay from each flip's request to each watcher's receipt of that
//! user's event, and to the slowest watcher's.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::follow::{query_ids, IDS_PER_QUERY};
use super::{connect_with, http_client, open_many, spawn_reader, summary, Error, Socket};

/// The command line of `storm`.
#[derive(clap::Args)]
pub struct Args {
    /// presence-server's base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    server: String,
    #[arg(long, default_value = "bench-key")]
    api_key: String,
    /// A server token (`presence-server token --server --api-secret ...`): the flips are made with it.
    #[arg(long)]
    server_token: String,
    /// The server's process id (its CPU time is read from /proc).
    #[arg(long)]
    pid: u32,
    /// Users that flip, once each.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Connections that follow every one of the users.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// The watchers' batching window (`batch_ms` on /connect, 1–50); 0: one event per frame.
    #[arg(long, default_value_t = 0)]
    batch_ms: u64,
    /// The flips are spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    spread_ms: u64,
    /// How long after the first flip every watcher may take to hear every flip; what has not arrived by then
    /// is counted as missing.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
}

/// The id of the i-th flipping user.
fn flipper(i: usize) -> String {
    format!("storm-{i}")
}

/// The index of a flipping user's id, if it is one of the `users`.
fn flipper_index(id: &str, users: usize) -> Option<usize> {
    let i: usize = id.strip_prefix("storm-")?.parse().ok()?;
    (i < users).then_some(i)
}

/// The fields of an event this reads; the rest is skipped without being kept.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    user: Option<EventUser<'a>>,
}

#[derive(Deserialize)]
struct EventUser<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    online: Option<bool>,
}

/// The events of one frame: a batch's (an array), or the frame itself.
fn events_of(text: &str) -> Result<Vec<Event<'_>>, serde_json::Error> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
    } else {
        serde_json::from_str(text).map(|event| vec![event])
    }
}

/// What the watchers share: the clock of the run, whether the storm started, who has heard everything.
struct Shared {
    base: Instant,
    users: usize,
    armed: AtomicBool,
    /// Watchers that heard every flip.
    complete: AtomicUsize,
    /// Watchers whose connection ended.
    lost: AtomicUsize,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// What one watcher received once the storm started.
#[derive(Default)]
struct Tally {
    frames: u64,
    events: u64,
    /// (flip, arrival in ns on the run's clock), the first `online: false` about each flipping user.
    arrivals: Vec<(u32, u64)>,
    /// Storm events about a user already heard, and frames that did not parse.
    repeats: u64,
    unreadable: u64,
    /// How its connection ended before it was stopped: the close code, or 1006 for a lost connection.
    closed: Option<u16>,
}

/// Reads a watcher's socket until `stop`, tallying from the moment the storm is armed. Frames are timestamped as
/// they come off the socket; every event in a frame gets its frame's time.
fn spawn_watcher(
    mut ws: Socket,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Tally> {
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut heard = vec![false; shared.users];
        let mut remaining = shared.users;
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.changed() => break,
                message = ws.next() => message,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    tally.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    tally.closed = Some(1006);
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            if !shared.armed.load(Ordering::Relaxed) {
                continue;
            }
            let at = shared.now_ns();
            tally.frames += 1;
            let Ok(events) = events_of(text.as_str()) else {
                tally.unreadable += 1;
                continue;
            };
            for event in events {
                tally.events += 1;
                let Some(user) = event.user else { continue };
                if event.kind != "user.presence.changed" || user.online != Some(false) {
                    continue;
                }
                let Some(i) = flipper_index(&user.id, shared.users) else {
                    continue;
                };
                if std::mem::replace(&mut heard[i], true) {
                    tally.repeats += 1;
                    continue;
                }
                tally.arrivals.push((i as u32, at));
                remaining -= 1;
                if remaining == 0 {
                    shared.complete.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tally
    })
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: &str) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').ok_or("no command name in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_sec.max(1) as f64)
}

/// One flip: `invisible` on for user `i` by a partial update with the server token; stores the moment the
/// request is sent in `sent[i]`, returns the response time in µs (None if the request failed).
async fn flip(
    http: reqwest::Client,
    url: Arc<String>,
    token: Arc<String>,
    shared: Arc<Shared>,
    sent: Arc<Vec<AtomicU64>>,
    i: usize,
) -> Option<f64> {
    let body = json!({ "users": [{ "id": flipper(i), "set": { "invisible": true } }] });
    let request = http
        .patch(url.as_str())
        .header("Authorization", token.as_str())
        .header("stream-auth-type", "jwt")
        .json(&body);
    let t0 = shared.now_ns();
    sent[i].store(t0, Ordering::Relaxed);
    let response = request.send().await.ok()?;
    let ok = response.status().is_success();
    let _ = response.bytes().await;
    ok.then(|| (shared.now_ns() - t0) as f64 / 1e3)
}

pub async fn run(a: Args) -> Result<Value, Error> {
    let (users, watchers) = (a.users, a.watchers);
    let http = http_client();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        users,
        armed: AtomicBool::new(false),
        complete: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
    });
    let started = Instant::now();
    // The flipping users come online (their sockets read so that they answer pings); slots after the watchers'.
    let server = Arc::new(a.server.clone());
    let api_key = Arc::new(a.api_key.clone());
    open_many(users, 64, |i| {
        let (server, api_key) = (server.clone(), api_key.clone());
        async move {
            let (ws, _) = connect_with(&server, &api_key, &flipper(i), watchers + i, "").await?;
            spawn_reader(ws, None);
            Ok(())
        }
    })
    .await?;
    let ids: Arc<Vec<String>> = Arc::new((0..users).map(flipper).collect());
    let extra = if a.batch_ms > 0 {
        format!("&batch_ms={}", a.batch_ms)
    } else {
        String::new()
    };
    let (stop_tx, stop) = watch::channel(false);
    // Each watcher connects, is read from then on, and follows every user, 100 ids a query.
    let readers = open_many(watchers, 32, |n| {
        let (server, api_key, http) = (server.clone(), api_key.clone(), http.clone());
        let (ids, shared, stop, extra) = (ids.clone(), shared.clone(), stop.clone(), extra.clone());
        async move {
            let id = format!("watcher-{n}");
            let (ws, first) = connect_with(&server, &api_key, &id, n, &extra).await?;
            let connection = first["connection_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let reader = spawn_watcher(ws, shared, stop);
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let auth = Ok((id.as_str(), connection.as_str()));
                let answer = query_ids(&http, &server, &api_key, chunk, auth).await?;
                let online = answer.iter().filter(|u| u["online"] == json!(true)).count();
                if answer.len() != chunk.len() || online != chunk.len() {
                    return Err(format!(
                        "{id}: {online} of {} followed users online, {} answered",
                        chunk.len(),
                        answer.len()
                    )
                    .into());
                }
            }
            Ok(reader)
        }
    })
    .await?;
    let setup_secs = started.elapsed().as_secs_f64();
    // Let the setup's last writes and answers settle before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pid = a.pid.to_string();
    let server_cpu_before = cpu_secs(&pid)?;
    let own_cpu_before = cpu_secs("self")?;
    // For a caller that profiles the server during the storm only.
    eprintln!("storming");
    shared.armed.store(true, Ordering::Relaxed);
    let storm_start = shared.now_ns();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..users).map(|_| AtomicU64::new(0)).collect());
    let url = Arc::new(format!("{}/users?api_key={}", a.server, a.api_key));
    let token = Arc::new(a.server_token.clone());
    let step = Duration::from_secs_f64(a.spread_ms as f64 / 1e3 / users.max(1) as f64);
    let first_at = tokio::time::Instant::now();
    let mut flips = Vec::with_capacity(users);
    for i in 0..users {
        tokio::time::sleep_until(first_at + step * i as u32).await;
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        flips.push(tokio::spawn(flip(
            http,
            url,
            token,
            shared.clone(),
            sent.clone(),
            i,
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(a.wait_secs);
    while shared.complete.load(Ordering::Relaxed) + shared.lost.load(Ordering::Relaxed) < watchers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let storm_end = shared.now_ns();
    let mut patch_us = Vec::with_capacity(users);
    let mut flip_errors = 0usize;
    for task in flips {
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(Some(us))) => patch_us.push(us),
            _ => flip_errors += 1,
        }
    }
    let server_cpu = cpu_secs(&pid)? - server_cpu_before;
    let own_cpu = cpu_secs("self")? - own_cpu_before;
    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(watchers);
    for reader in readers {
        tallies.push(reader.await?);
    }
    Ok(report(Report {
        a: &a,
        tallies: &tallies,
        sent: &sent,
        setup_secs,
        storm_ns: storm_end - storm_start,
        server_cpu,
        own_cpu,
        patch_us,
        flip_errors,
    }))
}

struct Report<'a> {
    a: &'a Args,
    tallies: &'a [Tally],
    sent: &'a [AtomicU64],
    setup_secs: f64,
    storm_ns: u64,
    server_cpu: f64,
    own_cpu: f64,
    patch_us: Vec<f64>,
    flip_errors: usize,
}

fn report(mut r: Report<'_>) -> Value {
    let (users, watchers) = (r.a.users, r.a.watchers);
    let sent: Vec<u64> = r.sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let mut delivery_us = Vec::with_capacity(users * watchers);
    // Per flip: how many watchers heard it, and the latest arrival.
    let mut heard_by = vec![0usize; users];
    let mut latest = vec![0u64; users];
    for tally in r.tallies {
        for &(i, at) in &tally.arrivals {
            let i = i as usize;
            delivery_us.push(at.saturating_sub(sent[i]) as f64 / 1e3);
            heard_by[i] += 1;
            latest[i] = latest[i].max(at);
        }
    }
    let mut last_us: Vec<f64> = (0..users)
        .filter(|&i| heard_by[i] == watchers)
        .map(|i| latest[i].saturating_sub(sent[i]) as f64 / 1e3)
        .collect();
    let frames: Vec<u64> = r.tallies.iter().map(|t| t.frames).collect();
    let events: Vec<u64> = r.tallies.iter().map(|t| t.events).collect();
    let total_events: u64 = events.iter().sum();
    let per_watcher = |values: &[u64]| {
        json!({
            "mean": values.iter().sum::<u64>() as f64 / values.len().max(1) as f64,
            "min": values.iter().min(),
            "max": values.iter().max(),
        })
    };
    let mut closed: Vec<u16> = r.tallies.iter().filter_map(|t| t.closed).collect();
    closed.sort_unstable();
    let deliveries = delivery_us.len();
    let spread: Vec<u64> = sent.iter().copied().filter(|&t| t > 0).collect();
    let send_span_ms = match (spread.iter().min(), spread.iter().max()) {
        (Some(first), Some(last)) => (last - first) as f64 / 1e6,
        _ => f64::NAN,
    };
    json!({
        "users": users,
        "watchers": watchers,
        "batch_ms": r.a.batch_ms,
        "spread_ms": r.a.spread_ms,
        "setup_secs": r.setup_secs,
        "flip_send_span_ms": send_span_ms,
        "flip_errors": r.flip_errors,
        "patch_us": summary(&mut r.patch_us),
        "storm_secs": r.storm_ns as f64 / 1e9,
        "expected_deliveries": users * watchers,
        "deliveries": deliveries,
        "missing": users * watchers - deliveries,
        "flips_heard_by_all": last_us.len(),
        "repeats": r.tallies.iter().map(|t| t.repeats).sum::<u64>(),
        "unreadable_frames": r.tallies.iter().map(|t| t.unreadable).sum::<u64>(),
        "closed": closed,
        "events": total_events,
        "frames": frames.iter().sum::<u64>(),
        "frames_per_watcher": per_watcher(&frames),
        "events_per_watcher": per_watcher(&events),
        "server_cpu_secs": r.server_cpu,
        "server_cpu_us_per_event": r.server_cpu * 1e6 / total_events.max(1) as f64,
        "loadgen_cpu_secs": r.own_cpu,
        "delivery_us": summary(&mut delivery_us),
        "last_watcher_us": summary(&mut last_us),
    })
}
