//! Ids and subscriptions within limits (protocol section 10): user ids of at most 255 characters on every path
//! that writes or names one, pages of watchers capped like the other pages, and a cap on the users one
//! connection follows. Just under passes; just over is refused with 400 / code 4 naming the limit.

mod common;

use common::*;
use presence_protocol::codes::{close_code, error_code};
use serde_json::{json, Value};

fn assert_input(r: &Resp, words: &str) {
    let err = r.err(400, error_code::INPUT);
    assert!(
        err.message.contains(words),
        "{}: message should say {words}: {}",
        r.desc,
        err.message
    );
}

#[tokio::test]
async fn user_ids_over_255_characters_are_refused_on_every_rest_path() {
    let s = Server::in_process().await;
    let fits = "é".repeat(255);
    let over = "u".repeat(256);
    s.upsert(&[json!({ "id": "ann" })]).await;

    for auth in [Auth::Server, Auth::user(&over)] {
        let r = s.upsert_as(&auth, &[json!({ "id": over })]).await;
        assert_input(&r, "255");
        let r = s
            .partial_update(&auth, &over, json!({ "name": "O" }), &[])
            .await;
        assert_input(&r, "255");
    }
    assert!(s.user_ids(json!({ "id": over })).await.is_empty());

    // Naming one as a member or as the creator of a channel is refused too.
    let r = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("long-member"),
            json!({ "data": { "members": ["ann", over] } }),
        )
        .await;
    assert_input(&r, "255");
    let r = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("long-creator"),
            json!({ "data": { "members": ["ann"], "created_by_id": over } }),
        )
        .await;
    assert_input(&r, "255");

    // 255 characters work everywhere.
    s.upsert_as(&Auth::user(&fits), &[json!({ "id": fits })])
        .await
        .ok(201);
    s.partial_update(&Auth::Server, &fits, json!({ "name": "F" }), &[])
        .await
        .ok(200);
    s.query_channel(
        &Auth::Server,
        None,
        "messaging",
        Some("long-ok"),
        json!({ "data": { "members": ["ann", fits], "created_by_id": fits } }),
    )
    .await
    .ok(201);
    assert_eq!(s.user_ids(json!({ "id": fits })).await, vec![fits]);
    // A query naming an over-long id is answered (nothing matches), not refused.
    assert!(s
        .user_ids(json!({ "id": { "$in": [over] } }))
        .await
        .is_empty());
}

#[tokio::test]
async fn connecting_with_a_user_id_over_255_characters_is_refused() {
    let s = Server::start().await;
    let over = "u".repeat(256);
    let (frame, mut refused) = s.refused_connect(&over, &json!({ "id": over })).await;
    assert_eq!(frame["error"]["code"], error_code::INPUT, "{frame}");
    assert_eq!(frame["error"]["StatusCode"], 400, "{frame}");
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("255"),
        "{frame}"
    );
    assert_eq!(
        refused.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::NORMAL))
    );
    assert!(s.user_ids(json!({ "id": over })).await.is_empty());

    let fits = "u".repeat(255);
    let ws = s.connect(&fits).await;
    assert_eq!(ws.me()["id"], fits.as_str());
}

#[tokio::test]
async fn watcher_pages_are_capped_like_other_pages() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    s.create_channel("livestream", "show", &["ann"], json!({}))
        .await;
    let ann = Auth::user("ann");
    let page = |watchers: Value| {
        s.query_channel(
            &ann,
            None,
            "livestream",
            Some("show"),
            json!({ "state": true, "watchers": watchers }),
        )
    };
    assert_input(&page(json!({ "limit": 101 })).await, "watchers.limit");
    assert_input(&page(json!({ "offset": 1001 })).await, "watchers.offset");
    assert_input(&page(json!({ "limit": -1 })).await, "limit");
    page(json!({ "limit": 100, "offset": 1000 })).await.ok(201);
}

/// Users u0 to u{n-1}, and a connection of bob's that follows nobody yet.
async fn follower(s: &Server, n: usize) -> Ws {
    let mut users: Vec<Value> = (0..n).map(|i| json!({ "id": format!("u{i}") })).collect();
    users.push(json!({ "id": "bob" }));
    s.upsert(&users).await;
    s.connect("bob").await
}

async fn follow(s: &Server, ws: &Ws, ids: &[&str]) -> Resp {
    s.query_users(
        &Auth::user(&ws.user_id),
        Some(&ws.connection_id),
        json!({ "filter_conditions": { "id": { "$in": ids } }, "presence": true }),
    )
    .await
}

#[tokio::test]
async fn a_connection_follows_at_most_max_follows_per_connection_users() {
    let s = Server::start_with(ServerOpts::default().arg("--max-follows-per-connection", 3)).await;
    let mut bob = follower(&s, 5).await;
    follow(&s, &bob, &["u0", "u1"]).await.ok(200);
    // Following again whom it follows already costs nothing.
    follow(&s, &bob, &["u0", "u1", "u2"]).await.ok(200);
    let r = follow(&s, &bob, &["u2", "u3", "u4"]).await;
    assert_input(&r, "limit of 3");
    // The refused query followed nobody, not even up to the cap.
    let u3 = s.connect("u3").await;
    bob.expect_no_presence("u3", QUIET).await;
    drop(u3);
    let _u2 = s.connect("u2").await;
    bob.wait_presence("u2", true, WAIT).await;
    // The same query without presence is still answered.
    let r = s
        .query_users(
            &Auth::user("bob"),
            Some(&bob.connection_id),
            json!({ "filter_conditions": { "id": { "$in": ["u3", "u4"] } } }),
        )
        .await;
    assert_eq!(ids(&r.ok(200)["users"]).len(), 2);
    // The cap is per connection: another one of bob's starts from nothing.
    let other = s.connect("bob").await;
    follow(&s, &other, &["u2", "u3", "u4"]).await.ok(200);
}
