//! The cluster log keeps only what the engine accepts: a request refused for its caller's rights, its size or
//! its shape is answered by the node it reached and appends nothing to the log (which every node reads and
//! Redis holds in memory), while accepted requests still reach every node. Two real nodes on a private Redis.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::json;

/// The cluster log's stream key.
const LOG_KEY: &str = "presence:log";

#[tokio::test]
async fn refused_requests_leave_nothing_in_redis_and_accepted_ones_reach_the_other_node() {
    let redis = Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    let b = Server::start_with(redis.node("b")).await;
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

#[tokio::test]
async fn a_request_larger_than_an_entry_may_be_is_refused_before_the_log() {
    let redis = Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    // A body of exactly the largest size taken (1 MiB) whose users' teams (not part of the 5 KB of fields)
    // fill it: as a log entry it takes a few bytes more (the command's name and caller).
    const MAX_BODY: usize = 1024 * 1024;
    let team = "t".repeat(1000);
    let mut users: Vec<String> = (0..100)
        .map(|i| {
            let teams = vec![format!("\"{team}\""); 10].join(",");
            format!("\"u{i}\":{{\"id\":\"u{i}\",\"teams\":[{teams}]}}")
        })
        .collect();
    let body_of = |users: &[String]| format!("{{\"users\":{{{}}}}}", users.join(","));
    let short = MAX_BODY - body_of(&users).len();
    let last = users.pop().unwrap();
    users.push(last.replacen(&team, &format!("{team}{}", "t".repeat(short)), 1));
    let body = body_of(&users);
    assert_eq!(body.len(), MAX_BODY);
    let entries = redis.xlen(LOG_KEY).await;

    let r = a
        .post("/users")
        .auth(&Auth::Server)
        .raw_json(body)
        .send()
        .await;
    r.err(413, 22);
    assert_eq!(redis.xlen(LOG_KEY).await, entries);
    assert!(a.user_ids(json!({ "id": "u0" })).await.is_empty());
}

#[tokio::test]
async fn a_write_acknowledged_by_one_node_is_seen_by_the_next_request_on_another() {
    let redis = Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    let b = Server::start_with(redis.node("b")).await;
    for i in 0..30 {
        let id = format!("user-{i}");
        a.upsert(&[json!({ "id": id })]).await;
        // Refused by `b` were it to judge on what it has applied so far, without the log's latest entries.
        b.partial_update(
            &Auth::User(id.clone()),
            &id,
            json!({ "status": "here" }),
            &[],
        )
        .await
        .ok(200);
    }
}

#[tokio::test]
async fn subscriptions_asked_of_one_node_for_a_connection_another_holds_take_effect_there() {
    let redis = Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    let b = Server::start_with(redis.node("b")).await;
    a.upsert(&[
        json!({ "id": "fay" }),
        json!({ "id": "gus" }),
        json!({ "id": "hal" }),
        json!({ "id": "ivy" }),
    ])
    .await;
    b.create_channel("messaging", "room", &["fay", "hal"], json!({}))
        .await;
    let mut fay = a.connect("fay").await;
    // The REST calls go to `b`, naming the connection `a` holds: `a` applies them as entries it answers nobody.
    b.subscribe_users(&fay, &["gus"]).await;
    b.watch(&fay, "messaging", "room", true).await;
    let _gus = b.connect("gus").await;
    fay.wait_presence("gus", true, WAIT).await;
    let _hal = b.connect("hal").await;
    fay.wait_presence("hal", true, WAIT).await;
    // queryChannels watching with presence, likewise.
    b.create_channel("messaging", "hall", &["fay", "ivy"], json!({}))
        .await;
    b.query_channels(
        &Auth::user("fay"),
        Some(&fay.connection_id),
        json!({ "filter_conditions": { "cid": "messaging:hall" }, "watch": true, "presence": true }),
    )
    .await
    .ok(201);
    let _ivy = b.connect("ivy").await;
    fay.wait_presence("ivy", true, WAIT).await;
}
