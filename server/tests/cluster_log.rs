//! The cluster log keeps only what the engine accepts: a request refused for its caller's rights, its size or
//! its shape is answered by the node it reached and appends nothing to the log (which every node reads and
//! Redis holds in memory), while accepted requests still reach every node. Two real nodes on a private Redis.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::json;

/// The cluster log's stream key.
const LOG_KEY: &str = "presence:log";

fn node(redis: &Redis, id: &str) -> ServerOpts {
    ServerOpts::default()
        .arg("--redis-url", &redis.url)
        .arg("--node-id", id)
}

#[tokio::test]
async fn refused_requests_leave_nothing_in_redis_and_accepted_ones_reach_the_other_node() {
    let redis = Redis::start();
    let a = Server::start_with(node(&redis, "a")).await;
    let b = Server::start_with(node(&redis, "b")).await;
    a.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let alice = Auth::User("alice".into());

    let entries = redis.xlen(LOG_KEY).await;
    let memory = redis.used_memory().await;

    // Too large: a 900 KB field on oneself.
    let big = "x".repeat(900_000);
    a.upsert_as(&alice, &[json!({ "id": "alice", "bio": big })])
        .await
        .err(400, 4);
    a.partial_update(&alice, "alice", json!({ "bio": big }), &[])
        .await
        .err(400, 4);
    // Someone else's record.
    a.upsert_as(&alice, &[json!({ "id": "bob", "name": "mallory" })])
        .await
        .err(403, 17);
    a.partial_update(&alice, "bob", json!({ "name": "mallory" }), &[])
        .await
        .err(403, 17);
    // A channel the caller may not create, and one of a type that does not exist.
    a.query_channel(
        &alice,
        None,
        "messaging",
        Some("theirs"),
        json!({ "data": { "members": ["bob"] } }),
    )
    .await
    .err(403, 17);
    a.query_channel(
        &alice,
        None,
        "no-such-type",
        Some("x"),
        json!({ "data": { "members": ["alice"] } }),
    )
    .await
    .err(400, 4);

    assert_eq!(
        redis.xlen(LOG_KEY).await,
        entries,
        "refused requests appended entries to the cluster log"
    );
    let grown = redis.used_memory().await.saturating_sub(memory);
    assert!(
        grown < 100_000,
        "Redis holds {grown} more bytes after refused requests"
    );

    // An accepted request is appended and reaches the other node.
    a.partial_update(&alice, "alice", json!({ "status": "back" }), &[])
        .await
        .ok(200);
    assert_eq!(redis.xlen(LOG_KEY).await, entries + 1);
    assert_eq!(b.user_as(&Auth::Server, "alice").await["status"], "back");
}
