//! Measurements, not checks (run with `--ignored --nocapture`): group commit under concurrent REST writes, and a
//! `health.check` round trip of an idle connection while other clients loop unpinned queries.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use presence_protocol::codes::event_type;
use serde_json::json;

/// The value of a counter, if the server exports it.
async fn counter(s: &Server, name: &str) -> Option<f64> {
    metric_value(&s.metrics().await, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn group_commit_of_concurrent_upserts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::default().db(dir.path().join("presence.db"));
    // strace needs the server's pid: the binary then.
    let s = match std::env::var("LOAD_STRACE") {
        Ok(_) => Server::binary(opts).await,
        Err(_) => Server::start_with(opts).await,
    };
    let concurrency: usize = std::env::var("LOAD_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rounds = 20;
    let commits_before = counter(&s, "presence_store_commits_total").await;
    // With LOAD_STRACE set, count the server's fsyncs too (works for builds without the commit counter).
    let strace = std::env::var("LOAD_STRACE").is_ok().then(|| {
        std::process::Command::new("strace")
            .args([
                "-f",
                "-c",
                "-e",
                "trace=fsync,fdatasync",
                "-p",
                &s.pid().to_string(),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run strace")
    });
    sleep_ms(if strace.is_some() { 1000 } else { 0 }).await;
    let started = Instant::now();
    for round in 0..rounds {
        let calls = (0..concurrency).map(|i| {
            let s = &s;
            async move {
                s.upsert_as(
                    &Auth::Server,
                    &[json!({ "id": format!("u{i}"), "round": round })],
                )
                .await
                .ok(201);
            }
        });
        join_all(calls).await;
    }
    let elapsed = started.elapsed();
    let writes = (concurrency * rounds) as f64;
    let commits = match (
        commits_before,
        counter(&s, "presence_store_commits_total").await,
    ) {
        (Some(a), Some(b)) => format!("{}", b - a),
        _ => "n/a".to_string(),
    };
    if let Some(child) = strace {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("strace output");
        println!("{}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "group commit: {writes} upserts, {concurrency} concurrent, in {:.2} s = {:.0} writes/s; commits: {commits}",
        elapsed.as_secs_f64(),
        writes / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn health_check_round_trip_under_unpinned_queries() {
    let users: usize = std::env::var("LOAD_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let s = Server::start_with(ServerOpts::default().ping(60_000, 120_000)).await;
    for chunk in (0..users).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|i| json!({ "id": format!("user-{i:06}"), "name": format!("User {i}"), "score": i % 977 }))
            .collect();
        s.upsert_as(&Auth::Server, &batch).await.ok(201);
    }
    let mut idle = s.connect("idle").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loops: Vec<_> = (0..8)
        .map(|n| {
            let (base, token) = (s.url("/users"), s.server_token());
            let (stop, queries) = (stop.clone(), queries.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let payload = json!({
                        "filter_conditions": { "score": { "$gte": n } },
                        "sort": [{ "field": "name", "direction": 1 }],
                        "limit": 30,
                    });
                    let r = http
                        .get(&base)
                        .query(&[("api_key", API_KEY), ("payload", &payload.to_string())])
                        .header("authorization", &token)
                        .header("stream-auth-type", "jwt")
                        .send()
                        .await;
                    if let Ok(r) = r {
                        let _ = r.bytes().await;
                        queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    sleep_ms(500).await;
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        let ping = json!([{ "type": "health.check", "client_id": "idle--bench" }]);
        idle.send_json(&ping).await;
        idle.wait_type(event_type::HEALTH_CHECK, Duration::from_secs(120))
            .await;
        samples.push(t.elapsed());
        sleep_ms(50).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "health.check round trip over {} samples with 8 clients querying {users} users ({} queries in {:.0} s): \
         p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        queries.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
