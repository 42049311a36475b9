//! `/healthz` tells whether the server can do its work: `ok` while it can, 503 naming the failing part while
//! the database refuses every write (until a commit succeeds again) or, in cluster mode, while Redis cannot be
//! reached — on the public address and on the admin one.

mod common;

use std::path::Path;

use common::redis::Redis;
use common::*;
use reqwest::Method;
use serde_json::json;

/// The public and the admin answer to `GET /healthz`.
async fn health(s: &Server) -> [Resp; 2] {
    [
        s.get("/healthz").no_api_key().send().await,
        s.admin_call(Method::GET, "/healthz").send().await,
    ]
}

fn assert_ok(answers: &[Resp; 2]) {
    for r in answers {
        assert_eq!((r.status, r.text.as_str()), (200, "ok\n"), "{}", r.desc);
    }
}

fn assert_failing(answers: &[Resp; 2], part: &str) {
    for r in answers {
        assert_eq!(r.status, 503, "{}: {}", r.desc, r.text);
        assert_eq!(
            r.json,
            json!({ "status": "unavailable", "failing": [part] }),
            "{}",
            r.desc
        );
    }
}

/// How long a node may take to see Redis work again: its next heartbeat (every 3 s) remakes the connection
/// its writes share, the one after that proves it.
const REDIS_BACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Polls `/healthz` until its status is `status`, bounded.
async fn wait_health(s: &Server, status: u16) -> [Resp; 2] {
    let deadline = tokio::time::Instant::now() + REDIS_BACK;
    loop {
        let answers = health(s).await;
        if answers.iter().all(|r| r.status == status) {
            return answers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz did not turn {status}: {} {}",
            answers[0].status,
            answers[0].text
        );
        sleep_ms(50).await;
    }
}

/// SQLite's write lock, held by another connection until dropped: the server's commits fail.
fn lock(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open the database file");
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    conn
}

#[tokio::test]
async fn an_unwritable_database_shows_as_failing_until_it_takes_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let s = Server::start_with(ServerOpts::default().db(&db)).await;
    assert_ok(&health(&s).await);

    let held = lock(&db);
    s.upsert_as(&Auth::Server, &[json!({ "id": "alice" })])
        .await
        .err(500, -1);
    assert_failing(&health(&s).await, "database");

    // Back without any write: the server looks by itself.
    held.execute_batch("ROLLBACK").unwrap();
    drop(held);
    assert_ok(&wait_health(&s, 200).await);
    s.upsert_as(&Auth::Server, &[json!({ "id": "alice" })])
        .await
        .ok(201);
}

#[tokio::test]
async fn a_cluster_node_without_redis_shows_as_failing_until_redis_is_back() {
    let mut redis = Redis::start();
    let s = Server::start_with(redis.node("a")).await;
    assert_ok(&health(&s).await);

    redis.kill();
    assert_failing(&wait_health(&s, 503).await, "redis");

    redis.restart();
    assert_ok(&wait_health(&s, 200).await);
    // Healthy means writable: the first write after the outage goes through.
    s.upsert(&[json!({ "id": "alice" })]).await;
}
