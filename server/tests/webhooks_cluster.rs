//! Presence webhooks in cluster mode: two real nodes on a private Redis send to one real HTTP receiver. Each event
//! arrives from exactly one node (the node whose log entry made it), and when a node dies (kill -9) the offline
//! events of the users it held are sent by the survivor; on a PostgreSQL store the nodes share, so are the events
//! the dead node had not delivered.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use common::pg::Postgres;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

/// What the receiver acknowledged: (X-Webhook-Id, the event).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A receiver answering the status in `status` (200 to begin with); it records what it acknowledged.
async fn receiver() -> (String, Received, Arc<AtomicU16>) {
    let received: Received = Arc::default();
    let status = Arc::new(AtomicU16::new(200));
    let (keep, answer) = (Arc::clone(&received), Arc::clone(&status));
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (keep, answer) = (Arc::clone(&keep), Arc::clone(&answer));
            async move {
                let status = answer.load(Ordering::Relaxed);
                if status == 200 {
                    let id = headers
                        .get("x-webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    keep.lock().unwrap().push((id, event));
                }
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received, status)
}

fn node(redis: &Redis, id: &str, hook: &str) -> ServerOpts {
    redis.node(id).arg("--webhook-url", hook)
}

/// The (type, online) of every event about `user`, in arrival order.
fn story(received: &Received, user: &str) -> Vec<(String, bool)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e["user"]["id"] == json!(user))
        .map(|(_, e)| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["user"]["online"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_story(received: &Received, user: &str, len: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while story(received, user).len() < len {
        assert!(
            Instant::now() < deadline,
            "{user}: {:?} after {within:?}",
            story(received, user)
        );
        sleep_ms(50).await;
    }
}

/// Every event arrived once: no `X-Webhook-Id` twice.
fn assert_each_once(received: &Received) {
    let ids: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "each event once: {ids:?}");
}

fn presence(online: bool) -> (String, bool) {
    ("user.presence.changed".to_string(), online)
}

#[tokio::test]
async fn each_event_comes_from_one_node_and_a_dead_nodes_users_go_offline_from_the_survivor() {
    let redis = Redis::start();
    let (hook, received, _) = receiver().await;
    let mut a = Server::start_with(node(&redis, "a", &hook)).await;
    let b = Server::start_with(node(&redis, "b", &hook)).await;
    b.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    wait_story(&received, "bob", 1, Duration::from_secs(10)).await;

    let _alice = a.connect("alice").await;
    let bob = b.connect("bob").await;
    b.partial_update(&Auth::Server, "alice", json!({ "status": "here" }), &[])
        .await
        .ok(200);
    wait_story(&received, "alice", 3, Duration::from_secs(10)).await;
    wait_story(&received, "bob", 2, Duration::from_secs(10)).await;
    // Long enough for a duplicate from the other node to arrive too.
    sleep_ms(1_500).await;
    assert_each_once(&received);
    let updated = ("user.updated".to_string(), false);
    assert_eq!(
        story(&received, "alice"),
        vec![
            updated.clone(),
            presence(true),
            ("user.updated".to_string(), true)
        ]
    );
    assert_eq!(story(&received, "bob"), vec![updated, presence(true)]);

    // Node a dies: alice's connection ended with it; the survivor sends her offline event.
    let killed = Instant::now();
    a.kill().await;
    wait_story(&received, "alice", 4, Duration::from_secs(20)).await;
    let after = killed.elapsed();
    assert_eq!(story(&received, "alice")[3], presence(false));
    assert!(
        after <= Duration::from_secs(15),
        "alice read offline {after:?} after her node died"
    );
    assert_eq!(
        story(&received, "bob").len(),
        2,
        "bob, on the survivor, stays online"
    );
    drop(bob);
}

#[tokio::test]
async fn on_a_shared_postgresql_store_a_survivor_delivers_what_a_dead_node_had_not() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let (hook, received, status) = receiver().await;
    let on_pg = |id: &str| node(&redis, id, &hook).env("PRESENCE_DATABASE_URL", &pg.url);
    let mut a = Server::start_with(on_pg("a")).await;
    let b = Server::start_with(on_pg("b")).await;
    // The receiver refuses everything: node a's events wait in the outbox, its own to deliver.
    status.store(503, Ordering::Relaxed);
    b.upsert(&[json!({ "id": "alice" })]).await;
    let _alice = a.connect("alice").await;
    a.partial_update(&Auth::Server, "alice", json!({ "status": "before" }), &[])
        .await
        .ok(200);
    sleep_ms(500).await;
    a.kill().await;
    status.store(200, Ordering::Relaxed);
    // b finds a dead, ends alice's connection (her offline event, after the grace) and adopts a's outbox.
    wait_story(&received, "alice", 4, Duration::from_secs(30)).await;
    sleep_ms(1_500).await;
    assert_eq!(
        story(&received, "alice"),
        vec![
            ("user.updated".to_string(), false),
            presence(true),
            ("user.updated".to_string(), true),
            presence(false),
        ],
        "a's undelivered events, then the offline event, all from b and in order"
    );
    assert_each_once(&received);
    drop(b);
}
