//! Watching honours the grace window like presence does: a connection that ends abnormally leaves its user
//! watching its channels until the window ends; a reconnecting client that watches them again in time (as the
//! SDK's state recovery and our client do) causes no `user.watching.stop`/`start` pair, and the watcher lists and
//! counts others read agree with the events they got.

mod common;

use common::*;
use presence_protocol::codes::event_type;
use serde_json::{json, Value};

const GRACE_MS: u64 = 1500;

fn is_watching_event_about(v: &Value, user: &str) -> bool {
    v["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("user.watching"))
        && v["user"]["id"] == user
}

/// Watchers of `messaging:c1` as bob reads them: (ids, watcher_count).
async fn watchers(s: &Server) -> (Vec<String>, u64) {
    let r = s
        .query_channel(
            &Auth::user("bob"),
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true, "watchers": { "limit": 10 } }),
        )
        .await;
    let body = r.ok(201);
    (
        ids(&body["watchers"]),
        body["watcher_count"].as_u64().unwrap(),
    )
}

/// bob watches c1, alice joins it (bob hears her start); returns both connections.
async fn setup(s: &Server) -> (Ws, Ws) {
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    let mut bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c1", true).await;
    let alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", false).await;
    let ev = bob
        .wait_for("alice's watching.start", WAIT, |v| {
            is_type_of(v, event_type::USER_WATCHING_START, "alice")
        })
        .await;
    assert_eq!(ev["watcher_count"], 2, "{ev}");
    bob.wait_presence("alice", true, WAIT).await;
    (bob, alice)
}

#[tokio::test]
async fn a_quick_abnormal_reconnect_that_watches_again_sends_watchers_nothing() {
    let s = Server::start_with(ServerOpts::default().grace(GRACE_MS)).await;
    let (mut bob, alice) = setup(&s).await;

    // The socket drops without a close frame; once the server has noticed, alice still counts as watching.
    alice.drop_tcp().await;
    s.wait_metric("presence_open_connections", 1.0).await;
    assert_eq!(watchers(&s).await, (strs(&["alice", "bob"]), 2));

    // The client reconnects and re-watches on its new connection, as the SDK's recovery does (queryChannels
    // with watch).
    let alice = s.connect("alice").await;
    let r = s
        .query_channels(
            &Auth::user("alice"),
            Some(&alice.connection_id),
            json!({ "filter_conditions": { "cid": "messaging:c1" }, "watch": true, "state": true }),
        )
        .await;
    assert_eq!(r.ok(201)["channels"][0]["watcher_count"], 2);

    // Past the end of the grace window bob has heard nothing about it, and still reads two watchers.
    let got = bob
        .collect(ms(GRACE_MS) + QUIET, |v| v["user"]["id"] == "alice")
        .await;
    assert!(
        got.is_empty(),
        "a reconnect within the grace window reached bob: {got:?}"
    );
    assert_eq!(watchers(&s).await, (strs(&["alice", "bob"]), 2));

    // The same through a single channel's watch (our client's re-watch), after a close the client did not
    // mean (1001, e.g. a page navigation or a server restart).
    alice.close(1001).await;
    s.wait_metric("presence_open_connections", 1.0).await;
    let alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", false).await;
    bob.expect_none("watching events about alice", ms(GRACE_MS) + QUIET, |v| {
        is_watching_event_about(v, "alice")
    })
    .await;
    assert_eq!(watchers(&s).await, (strs(&["alice", "bob"]), 2));
}

#[tokio::test]
async fn a_watch_not_resumed_in_time_stops_when_the_grace_window_ends() {
    let s = Server::start_with(ServerOpts::default().grace(GRACE_MS)).await;
    let (mut bob, alice) = setup(&s).await;

    alice.drop_tcp().await;
    s.wait_metric("presence_open_connections", 1.0).await;
    // During the window: nothing, and the lists agree (alice is still a watcher).
    bob.expect_none(
        "watching events about alice during the grace window",
        ms(GRACE_MS / 2),
        |v| is_watching_event_about(v, "alice"),
    )
    .await;
    assert_eq!(watchers(&s).await, (strs(&["alice", "bob"]), 2));
    // At its end: she stops watching, then goes offline (leaving reads as the reverse of arriving).
    let got = bob
        .collect(ms(GRACE_MS) + QUIET, |v| v["user"]["id"] == "alice")
        .await;
    let kinds: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            event_type::USER_WATCHING_STOP,
            event_type::USER_PRESENCE_CHANGED
        ],
        "{got:?}"
    );
    assert_eq!(got[0]["watcher_count"], 1, "{}", got[0]);
    assert_eq!(got[0]["user"]["online"], false, "{}", got[0]);
    assert_eq!(got[1]["user"]["online"], false, "{}", got[1]);
    assert_eq!(watchers(&s).await, (strs(&["bob"]), 1));

    // Back online within the window but not watching c1 again: online all along, and the stop still comes when
    // the window ends.
    let alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    s.watch(&alice, "messaging", "c1", false).await;
    bob.wait_for("alice's watching.start", WAIT, |v| {
        is_type_of(v, event_type::USER_WATCHING_START, "alice")
    })
    .await;
    alice.drop_tcp().await;
    s.wait_metric("presence_open_connections", 1.0).await;
    let _alice = s.connect("alice").await;
    let got = bob
        .collect(ms(GRACE_MS) + QUIET, |v| v["user"]["id"] == "alice")
        .await;
    let kinds: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, [event_type::USER_WATCHING_STOP], "{got:?}");
    assert_eq!(got[0]["watcher_count"], 1, "{}", got[0]);
    assert_eq!(got[0]["user"]["online"], true, "{}", got[0]);
    assert_eq!(watchers(&s).await, (strs(&["bob"]), 1));
}
