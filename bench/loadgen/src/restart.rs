//! A crash and a restart: `clients` connections of their own users to a server on a file database, a few
//! observers following all of them, some clients made invisible and some given a status by partial update; then
//! the server is killed with SIGKILL and started again on the same database and address. Every client reconnects
//! by itself with the client's backoff ([`reconnect_delay`]); measured: how long until all are back, the
//! reconnects per second, whether the observers (which follow everyone again after reconnecting) see every
//! visible client online and every invisible one offline, and whether what was acknowledged before the crash
//! (status, invisibility) is still there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::follow::{self, attempt, observe, reconnect_delay, sleep_or_stop, Observer, View};
use super::{dev_token, Error};

/// What one run is asked to do.
pub struct Params {
    pub server_bin: PathBuf,
    pub db: PathBuf,
    /// The address the server binds, both times; a free loopback port when not given.
    pub addr: Option<SocketAddr>,
    pub api_key: String,
    pub api_secret: String,
    pub server_token: String,
    pub clients: usize,
    pub observers: usize,
    /// How long the server stays down between the kill and the restart.
    pub down_ms: u64,
    /// How long to wait for every client to be back.
    pub wait_secs: u64,
    pub seed: u64,
}

/// One client's connection history, shared with the controller.
#[derive(Default)]
struct ClientLog {
    attempts: Vec<Instant>,
    connects: Vec<Instant>,
    /// `me` of the latest handshake.
    me: Value,
}

/// What was acknowledged for a client before the crash.
#[derive(Clone, Default, PartialEq, Debug)]
struct Acked {
    invisible: bool,
    status: Option<String>,
}

/// Every fifth client goes invisible, every third gets a status (some both).
fn planned(n: usize) -> Acked {
    Acked {
        invisible: n % 5 == 2,
        status: (n % 3 == 1).then(|| format!("status {n} set before the crash")),
    }
}

/// A client: connects, reads its socket (answering pings) until it ends, then reconnects with the backoff,
/// until `stop`.
async fn client(
    server: String,
    api_key: String,
    id: String,
    n: usize,
    log: Arc<Mutex<ClientLog>>,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failures = 0u32;
    loop {
        if let Ok(mut l) = log.lock() {
            l.attempts.push(Instant::now());
        }
        if let Ok((mut ws, first)) = attempt(&server, &api_key, &id, n).await {
            failures = 0;
            if let Ok(mut l) = log.lock() {
                l.connects.push(Instant::now());
                l.me = first["me"].clone();
            }
            loop {
                tokio::select! {
                    _ = stop.changed() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                    message = ws.next() => match message {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
        // Right after a drop the delay is the shortest one; each failed attempt doubles its ceiling.
        let delay = reconnect_delay(failures, &mut rng);
        failures = failures.saturating_add(1);
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

/// The server as a child process on `addr` and `db`; resolves once it listens.
async fn start_server(p: &Params, addr: SocketAddr) -> Result<Child, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = Command::new(&p.server_bin)
            .args(["--addr", &addr.to_string(), "--db"])
            .arg(&p.db)
            .args(["--api-key", &p.api_key, "--api-secret", &p.api_secret])
            .arg("--dev-tokens")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(Duration::from_secs(15), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if listening {
            // Keep draining its output so that it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(child);
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        // The address may still be held for a moment after the kill: try again.
        if Instant::now() > deadline {
            return Err(format!("the server did not start on {addr}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (polling) until `done()` or `secs` pass; says whether it was done.
async fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Observers whose view is complete and shows every client as `expected` says.
fn converged(
    views: &[Arc<Mutex<View>>],
    generation: u32,
    expected: &dyn Fn(usize) -> bool,
) -> usize {
    views
        .iter()
        .filter(|v| {
            v.lock().is_ok_and(|v| {
                v.connections >= generation && v.ready && v.mismatches(expected).is_empty()
            })
        })
        .count()
}

fn mismatch_count(views: &[Arc<Mutex<View>>], expected: &dyn Fn(usize) -> bool) -> usize {
    views
        .iter()
        .map(|v| {
            v.lock()
                .map_or(usize::MAX, |v| v.mismatches(expected).len())
        })
        .sum()
}

/// Sets each client's planned status and invisibility by partial update (as that user); returns what the server
/// acknowledged.
async fn update_clients(p: &Params, url: &str, ids: &[String]) -> Result<Vec<Acked>, Error> {
    let http = super::http_client();
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let plan = planned(n);
        let mut set = serde_json::Map::new();
        if plan.invisible {
            set.insert("invisible".into(), json!(true));
        }
        if let Some(status) = &plan.status {
            set.insert("status".into(), json!(status));
        }
        if set.is_empty() {
            tasks.push(None);
            continue;
        }
        let permit = gate.clone().acquire_owned().await?;
        let request = http
            .patch(format!("{url}/users?api_key={}&user_id={id}", p.api_key))
            .header("Authorization", dev_token(id))
            .header("stream-auth-type", "jwt")
            .json(&json!({ "users": [{ "id": id, "set": set }] }));
        let id = id.clone();
        tasks.push(Some(tokio::spawn(async move {
            let response = request.send().await?;
            drop(permit);
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                return Err::<Acked, Error>(
                    format!("partial update answered {status}: {body}").into(),
                );
            }
            let user = &body["users"][&id];
            Ok(Acked {
                invisible: user["invisible"].as_bool().unwrap_or(false),
                status: user["status"].as_str().map(str::to_string),
            })
        })));
    }
    let mut acked = Vec::with_capacity(ids.len());
    for task in tasks {
        acked.push(match task {
            Some(task) => task.await??,
            None => Acked::default(),
        });
    }
    Ok(acked)
}

/// Counts per one-second bucket of the instants after `from`.
fn per_second(times: impl Iterator<Item = Instant>, from: Instant) -> Vec<usize> {
    let mut buckets: Vec<usize> = Vec::new();
    for t in times.filter(|t| *t >= from) {
        let b = t.duration_since(from).as_secs() as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, 0);
        }
        buckets[b] += 1;
    }
    buckets
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn run(p: Params) -> Result<Value, Error> {
    let addr = match p.addr {
        Some(addr) => addr,
        None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
    };
    let url = format!("http://{addr}");
    let mut server = start_server(&p, addr).await?;
    let (stop_tx, stop) = watch::channel(false);
    let ids: Vec<String> = (0..p.clients).map(|n| format!("rs-{n:05}")).collect();

    // Clients first (they create their users), 100 at a time.
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..p.clients).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for first in (0..p.clients).step_by(100) {
        let batch = first..(first + 100).min(p.clients);
        for n in batch.clone() {
            tasks.push(tokio::spawn(client(
                url.clone(),
                p.api_key.clone(),
                ids[n].clone(),
                n,
                Arc::clone(&logs[n]),
                stop.clone(),
                p.seed.wrapping_add(n as u64),
            )));
        }
        let connected = |n: usize| logs[n].lock().is_ok_and(|l| !l.connects.is_empty());
        if !wait_until(30, || batch.clone().all(connected)).await {
            return Err("not every client could connect before the crash".into());
        }
    }
    let acked = update_clients(&p, &url, &ids).await?;
    let invisible = acked.iter().filter(|a| a.invisible).count();
    let with_status = acked.iter().filter(|a| a.status.is_some()).count();
    let expected = |i: usize| !acked[i].invisible;

    let targets = Arc::new(ids.clone());
    let index = Arc::new(follow::index_of(&ids));
    let http = super::http_client();
    let views: Vec<Arc<Mutex<View>>> = (0..p.observers).map(|_| Arc::default()).collect();
    for (k, view) in views.iter().enumerate() {
        let o = Observer {
            server: url.clone(),
            api_key: p.api_key.clone(),
            id: format!("rs-observer-{k}"),
            n: p.clients + k,
            targets: Arc::clone(&targets),
            index: Arc::clone(&index),
            http: http.clone(),
            seed: p.seed.wrapping_add(1_000_000 + k as u64),
        };
        tasks.push(tokio::spawn(observe(o, Arc::clone(view), stop.clone())));
    }
    let before_ok = wait_until(30, || converged(&views, 1, &expected) == p.observers).await;
    if !before_ok {
        return Err(format!(
            "before the crash the observers do not see the clients as expected ({} differences)",
            mismatch_count(&views, &expected)
        )
        .into());
    }

    // The crash.
    let killed = Instant::now();
    server.start_kill()?;
    server.wait().await?;
    tokio::time::sleep(Duration::from_millis(p.down_ms)).await;
    let mut server = start_server(&p, addr).await?;
    let up = Instant::now();

    let back = |l: &ClientLog| l.connects.last().is_some_and(|t| *t > killed);
    let all_back = wait_until(p.wait_secs, || {
        logs.iter().all(|l| l.lock().is_ok_and(|l| back(&l)))
    })
    .await;
    let back_count = logs
        .iter()
        .filter(|l| l.lock().is_ok_and(|l| back(&l)))
        .count();
    let last_back = logs
        .iter()
        .filter_map(|l| l.lock().ok().and_then(|l| l.connects.last().copied()))
        .filter(|t| *t > killed)
        .max();
    let observers_ok = wait_until(30, || converged(&views, 2, &expected) == p.observers).await;
    let observers_converged = converged(&views, 2, &expected);
    let mismatches = mismatch_count(&views, &expected);

    // Persisted state: each client's own view at its reconnect, and the server's public view.
    let stored = follow::truth(&http, &url, &p.api_key, &p.server_token, &ids).await?;
    let mut lost = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let me = logs[n].lock().map(|l| l.me.clone()).unwrap_or_default();
        let own = Acked {
            invisible: me["invisible"].as_bool().unwrap_or(false),
            status: me["status"].as_str().map(str::to_string),
        };
        let public_status = stored
            .get(id)
            .and_then(|u| u["status"].as_str())
            .map(str::to_string);
        if own != acked[n] || public_status != acked[n].status {
            lost.push(format!(
                "{id}: acknowledged {:?}, read back {own:?}",
                acked[n]
            ));
        }
    }

    let (attempts, reconnects): (Vec<Instant>, Vec<Instant>) = {
        let mut a = Vec::new();
        let mut r = Vec::new();
        for l in &logs {
            if let Ok(l) = l.lock() {
                a.extend(l.attempts.iter().copied());
                r.extend(l.connects.iter().copied());
            }
        }
        (a, r)
    };
    let reconnects_per_sec = per_second(reconnects.into_iter(), killed);
    let attempts_per_sec = per_second(attempts.into_iter(), killed);
    let largest = reconnects_per_sec.iter().copied().max().unwrap_or(0);
    let observer_reconnects: Vec<u32> = views
        .iter()
        .map(|v| v.lock().map_or(0, |v| v.connections.saturating_sub(1)))
        .collect();
    let examples: Vec<String> = views
        .iter()
        .filter_map(|v| v.lock().ok().map(|v| v.examples.clone()))
        .flatten()
        .take(5)
        .collect();

    stop_tx.send(true)?;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = server.start_kill();
    let _ = server.wait().await;
    Ok(json!({
        "clients": p.clients,
        "observers": p.observers,
        "invisible": invisible,
        "with_status": with_status,
        "down_ms": p.down_ms,
        "restart_ms": ms(up - killed),
        "all_back": all_back,
        "back": back_count,
        "all_back_ms": last_back.map(|t| ms(t - killed)),
        "all_back_after_up_ms": last_back.map(|t| ms(t.saturating_duration_since(up))),
        "reconnects_per_sec": reconnects_per_sec,
        "attempts_per_sec": attempts_per_sec,
        "largest_second": largest,
        "largest_second_share": largest as f64 / p.clients.max(1) as f64,
        "observers_converged": observers_ok,
        "observers_converged_count": observers_converged,
        "observer_mismatches": mismatches,
        "observer_reconnects": observer_reconnects,
        "persisted_checked": acked.iter().filter(|a| **a != Acked::default()).count(),
        "persisted_lost": lost.len(),
        "lost_examples": lost.into_iter().take(5).collect::<Vec<_>>(),
        "event_problems": examples,
    }))
}
