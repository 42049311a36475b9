//! Durability: nothing is acknowledged or broadcast before it is committed. The test holds SQLite's write lock
//! on the server's database file from a second connection (`BEGIN EXCLUSIVE`), so the server's commits fail with
//! SQLITE_BUSY for as long as the test wants.

mod common;

use std::path::Path;

use common::*;
use presence_protocol::codes::close_code;
use serde_json::{json, Value};

/// The database's write lock, held by another connection until dropped or released.
struct Lock(Option<rusqlite::Connection>);

impl Lock {
    fn take(db: &Path) -> Lock {
        let conn = rusqlite::Connection::open(db).expect("open the database file");
        conn.execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");
        Lock(Some(conn))
    }

    fn release(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.execute_batch("ROLLBACK").expect("release the lock");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.release();
    }
}

/// The server's answer to a write it could not commit: 500, code -1, a message naming the database failure in
/// the operation's name.
fn assert_database_failure(r: &Resp, operation: &str) {
    let e = r.err(500, -1);
    assert!(
        e.message
            .starts_with(&format!("{operation} failed with error: "))
            && e.message.contains("database"),
        "the message must name the operation and the database failure: {}",
        e.message
    );
}

async fn user(s: &Server, auth: &Auth, id: &str) -> Value {
    s.user_as(auth, id).await
}

/// Waits, bounded, until the server's log says a commit failed and is retried.
async fn wait_for_retry(s: &Server) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.stderr_tail().contains("retrying") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never retried a commit; stderr:\n{}",
            s.stderr_tail()
        );
        sleep_ms(10).await;
    }
}

/// alice (online) and bob, whose connection follows alice's presence.
async fn alice_followed_by_bob(s: &Server) -> (Ws, Ws) {
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice" }),
        json!({ "id": "bob" }),
    ])
    .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    (alice, bob)
}

#[tokio::test]
async fn a_write_the_database_refuses_fails_changes_nothing_and_tells_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let opts = ServerOpts::default().db(&db);
    let mut s = Server::binary(opts.clone()).await;
    let (alice, mut bob) = alice_followed_by_bob(&s).await;

    let mut lock = Lock::take(&db);
    let r = s
        .upsert_as(
            &Auth::Server,
            &[json!({ "id": "alice", "name": "Alice", "invisible": true })],
        )
        .await;
    assert_database_failure(&r, "UpdateUsers");
    bob.expect_none("event about alice", QUIET, |v| v["user"]["id"] == "alice")
        .await;
    let seen = user(&s, &Auth::user("alice"), "alice").await;
    assert_eq!(
        seen["invisible"], false,
        "memory went ahead of disk: {seen}"
    );
    assert_eq!(user(&s, &Auth::Server, "alice").await["online"], true);

    lock.release();
    let r = s
        .upsert_as(
            &Auth::Server,
            &[json!({ "id": "alice", "name": "Alice", "invisible": true })],
        )
        .await;
    r.ok(201);
    bob.wait_presence("alice", false, WAIT).await;

    drop((alice, bob));
    s.terminate().await;
    let s = Server::binary(opts).await;
    let seen = user(&s, &Auth::user("alice"), "alice").await;
    assert_eq!(
        seen["invisible"], true,
        "the acknowledged write was lost: {seen}"
    );
}

#[tokio::test]
async fn a_short_lock_delays_the_answer_and_the_events_until_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let s = Server::binary(ServerOpts::default().db(&db)).await;
    let (_alice, mut bob) = alice_followed_by_bob(&s).await;

    let mut lock = Lock::take(&db);
    let write = {
        let (base, token) = (s.url("/users"), s.server_token());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(base)
                .query(&[("api_key", API_KEY)])
                .header("authorization", token)
                .header("stream-auth-type", "jwt")
                .json(&json!({ "users": { "alice": { "id": "alice", "invisible": true } } }))
                .send()
                .await
                .expect("send the upsert")
                .status()
                .as_u16()
        })
    };
    wait_for_retry(&s).await;
    bob.expect_none("event about alice", ms(200), |v| v["user"]["id"] == "alice")
        .await;
    assert!(
        !write.is_finished(),
        "the write was answered before it was committed"
    );
    lock.release();
    assert_eq!(write.await.unwrap(), 201, "the retried commit must succeed");
    bob.wait_presence("alice", false, WAIT).await;
    let seen = user(&s, &Auth::user("alice"), "alice").await;
    assert_eq!(seen["invisible"], true, "{seen}");
}

#[tokio::test]
async fn a_connect_while_the_database_is_unwritable_is_refused_with_a_retryable_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let s = Server::start_with(ServerOpts::default().db(&db)).await;
    s.upsert(&[json!({ "id": "carol" }), json!({ "id": "bob" })])
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["carol"]).await;

    let mut lock = Lock::take(&db);
    let (frame, mut carol) = s.refused_connect("carol", &json!({ "id": "carol" })).await;
    assert_eq!(frame["error"]["code"], -1, "{frame}");
    // 1011: the server failed, try again (clients do not retry after 1000).
    assert_eq!(
        carol.wait_close_code(WAIT).await,
        close_code::INTERNAL_ERROR,
        "a connect whose commit failed"
    );
    bob.expect_no_presence("carol", QUIET).await;
    assert_eq!(user(&s, &Auth::Server, "carol").await["online"], false);

    lock.release();
    let carol = s.connect("carol").await;
    bob.wait_presence("carol", true, WAIT).await;
    drop(carol);
}
