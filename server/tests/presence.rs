//! Presence: who gets `user.presence.changed` and `user.updated`, multi-connection users, the offline grace
//! window, `last_active` stamping.

mod common;

use std::time::Instant;

use common::*;
use presence_protocol::codes::event_type;
use serde_json::json;

async fn users(s: &Server) {
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "status": "busy", "image": "http://img/a" }),
        json!({ "id": "bob", "name": "Bob" }),
        json!({ "id": "carol" }),
        json!({ "id": "dave" }),
    ])
    .await;
}

#[tokio::test]
async fn query_users_subscribers_see_connect_and_disconnect() {
    let grace = 3000;
    let s = Server::start_with(ServerOpts::default().grace(grace)).await;
    users(&s).await;
    let mut bob = s.connect("bob").await;
    let sub = s.subscribe_users(&bob, &["alice"]).await;
    assert_eq!(sub["users"][0]["online"], false);
    // carol is connected but subscribed to nothing; dave's subscription does not include alice.
    let mut carol = s.connect("carol").await;
    let mut dave = s.connect("dave").await;
    s.subscribe_users(&dave, &["bob", "carol"]).await;

    let connected_at = now();
    let alice = s.connect("alice").await;
    let ev = bob.wait_presence("alice", true, WAIT).await;
    let user = &ev["user"];
    assert_public_user(user, "alice");
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["status"], "busy");
    assert_eq!(user["image"], "http://img/a");
    assert_eq!(user["role"], "user");
    assert!(time(&user["last_active"]) >= connected_at - chrono::Duration::seconds(1));
    time(&ev["created_at"]);
    assert!(
        ev.get("cid").is_none() || ev["cid"].is_null() || ev["cid"] == "*",
        "presence events are user-level: {ev}"
    );

    // An explicit disconnect is immediate, whatever the grace window.
    let closed_at = Instant::now();
    alice.close(1000).await;
    let ev = bob.wait_presence("alice", false, WAIT).await;
    let took = closed_at.elapsed().as_millis();
    assert!(
        took < (grace as u128) / 2,
        "offline after a 1000 close took {took} ms (grace is {grace} ms)"
    );
    assert_public_user(&ev["user"], "alice");
    assert_eq!(ev["user"]["name"], "Alice");

    carol.expect_no_presence("alice", QUIET).await;
    dave.expect_no_presence("alice", ms(100)).await;
}

#[tokio::test]
async fn channel_watchers_with_presence_get_member_events() {
    let s = Server::start().await;
    users(&s).await;
    s.create_channel("messaging", "c1", &["alice", "bob", "carol"], json!({}))
        .await;
    s.create_channel("messaging", "c2", &["bob", "dave"], json!({}))
        .await;
    let mut bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c1", true).await;
    // Watching without presence: no presence events (strict rule).
    let mut carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", false).await;
    // Watching a channel alice is not a member of.
    let mut dave = s.connect("dave").await;
    s.watch(&dave, "messaging", "c2", true).await;

    let alice = s.connect("alice").await;
    let ev = bob.wait_presence("alice", true, WAIT).await;
    assert_public_user(&ev["user"], "alice");
    alice.close(1000).await;
    bob.wait_presence("alice", false, WAIT).await;
    carol.expect_no_presence("alice", QUIET).await;
    dave.expect_no_presence("alice", ms(100)).await;
}

#[tokio::test]
async fn watch_implies_presence_when_configured() {
    let s = Server::start_with(ServerOpts::default().watch_implies_presence()).await;
    users(&s).await;
    s.create_channel("messaging", "c1", &["alice", "carol"], json!({}))
        .await;
    let mut carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", false).await;
    let alice = s.connect("alice").await;
    carol.wait_presence("alice", true, WAIT).await;
    alice.close(1000).await;
    carol.wait_presence("alice", false, WAIT).await;
}

#[tokio::test]
async fn query_channels_with_presence_subscribes_to_members() {
    let s = Server::start().await;
    users(&s).await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    let mut bob = s.connect("bob").await;
    let r = s
        .query_channels(
            &Auth::user("bob"),
            Some(&bob.connection_id),
            json!({ "filter_conditions": { "members": { "$in": ["bob"] } }, "state": true, "watch": true, "presence": true }),
        )
        .await;
    assert_eq!(r.ok(201)["channels"].as_array().unwrap().len(), 1);
    let alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    alice.close(1000).await;
    bob.wait_presence("alice", false, WAIT).await;
}

#[tokio::test]
async fn one_event_per_connection_per_flip() {
    let s = Server::start().await;
    users(&s).await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    s.create_channel("messaging", "c2", &["alice", "bob"], json!({}))
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice", "bob"]).await;
    s.subscribe_users(&bob, &["alice"]).await;
    s.watch(&bob, "messaging", "c1", true).await;
    s.watch(&bob, "messaging", "c2", true).await;
    let mut bob2 = s.connect("bob").await;
    s.watch(&bob2, "messaging", "c1", true).await;

    let alice = s.connect("alice").await;
    for ws in [&mut bob, &mut bob2] {
        let got = ws.collect(ms(1200), |v| is_presence_of(v, "alice")).await;
        assert_eq!(
            got.len(),
            1,
            "{}: expected exactly one online event, got {got:?}",
            ws.connection_id
        );
        assert_eq!(got[0]["user"]["online"], true);
    }
    alice.close(1000).await;
    for ws in [&mut bob, &mut bob2] {
        let got = ws.collect(ms(1200), |v| is_presence_of(v, "alice")).await;
        assert_eq!(
            got.len(),
            1,
            "{}: expected exactly one offline event, got {got:?}",
            ws.connection_id
        );
        assert_eq!(got[0]["user"]["online"], false);
    }
}

#[tokio::test]
async fn several_connections_flip_only_on_first_and_last() {
    let grace = 800;
    let s = Server::start_with(ServerOpts::default().grace(grace)).await;
    users(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;

    let tab1 = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    let tab2 = s.connect("alice").await;
    let tab3 = s.connect("alice").await;
    bob.expect_no_presence("alice", QUIET).await;
    tab1.close(1000).await;
    bob.expect_no_presence("alice", QUIET).await;
    // An abnormal end of one tab while another remains: nothing, even after the grace window.
    tab3.drop_tcp().await;
    bob.expect_no_presence("alice", ms(grace + 700)).await;
    assert_eq!(s.user_as(&Auth::user("bob"), "alice").await["online"], true);
    tab2.close(1000).await;
    bob.wait_presence("alice", false, WAIT).await;
    assert_eq!(
        s.user_as(&Auth::user("bob"), "alice").await["online"],
        false
    );
}

#[derive(Clone, Copy, Debug)]
enum End {
    TcpDrop,
    GoingAway,
    ClientGoingAway,
    NoStatus,
}

async fn end(ws: Ws, how: End) {
    match how {
        End::TcpDrop => ws.drop_tcp().await,
        End::GoingAway => ws.close(1001).await,
        End::ClientGoingAway => ws.close(4001).await,
        End::NoStatus => ws.close_without_code().await,
    }
}

/// An abnormal end of the last connection: a reconnect inside the grace window sends peers nothing; without one,
/// the offline event comes once the window has passed.
async fn grace_window(how: End) {
    let grace = 1200;
    let s = Server::start_with(ServerOpts::default().grace(grace)).await;
    users(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;

    end(alice, how).await;
    sleep_ms(grace / 3).await;
    let alice = s.connect("alice").await;
    bob.expect_no_presence("alice", ms(grace + 800)).await;
    assert_eq!(
        s.user_as(&Auth::user("bob"), "alice").await["online"],
        true,
        "{how:?}"
    );

    let ended = Instant::now();
    end(alice, how).await;
    let ev = bob.wait_presence("alice", false, ms(grace + 4000)).await;
    let took = ended.elapsed().as_millis() as u64;
    assert!(
        took >= grace - 50,
        "{how:?}: offline after {took} ms, before the {grace} ms grace window ran out"
    );
    assert!(
        took <= grace + 2500,
        "{how:?}: offline only after {took} ms (grace {grace} ms)"
    );
    time(&ev["user"]["last_active"]);
}

#[tokio::test]
async fn grace_window_after_tcp_drop() {
    grace_window(End::TcpDrop).await;
}

#[tokio::test]
async fn grace_window_after_close_1001() {
    grace_window(End::GoingAway).await;
}

#[tokio::test]
async fn grace_window_after_close_4001() {
    grace_window(End::ClientGoingAway).await;
}

#[tokio::test]
async fn grace_window_after_close_without_status() {
    grace_window(End::NoStatus).await;
}

#[tokio::test]
async fn last_active_is_stamped_when_the_last_connection_ends() {
    let s = Server::start().await;
    users(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    let connected = time(&alice.me()["last_active"]);
    bob.wait_presence("alice", true, WAIT).await;
    sleep_ms(1500).await;
    alice.close(1000).await;
    let ev = bob.wait_presence("alice", false, WAIT).await;
    let stamped = time(&ev["user"]["last_active"]);
    assert!(
        stamped >= connected + chrono::Duration::milliseconds(1300),
        "last_active {stamped} was not stamped at disconnect (connected at {connected})"
    );
    let seen = time(&s.user_as(&Auth::user("bob"), "alice").await["last_active"]);
    assert!(
        (seen - stamped).num_milliseconds().abs() <= 1,
        "queryUsers last_active {seen} differs from the event's {stamped}"
    );
}

#[tokio::test]
async fn user_updated_goes_to_self_and_subscribers() {
    let s = Server::start().await;
    users(&s).await;
    s.create_channel("messaging", "c1", &["alice", "dave"], json!({}))
        .await;
    let mut alice = s.connect("alice").await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let mut dave = s.connect("dave").await;
    s.watch(&dave, "messaging", "c1", true).await;
    let mut carol = s.connect("carol").await;
    bob.drain(ms(200)).await;

    let r = s
        .partial_update(
            &Auth::user("alice"),
            "alice",
            json!({ "status": "away" }),
            &[],
        )
        .await;
    r.ok(200);
    let is_update =
        |v: &serde_json::Value| v["type"] == event_type::USER_UPDATED && v["user"]["id"] == "alice";
    for (ws, own) in [(&mut alice, true), (&mut bob, false), (&mut dave, false)] {
        let ev = ws
            .wait_for("user.updated about alice", WAIT, is_update)
            .await;
        assert_eq!(ev["user"]["status"], "away", "{ev}");
        assert_eq!(ev["user"]["name"], "Alice", "complete user object: {ev}");
        assert_eq!(ev["user"]["online"], true, "{ev}");
        if !own {
            assert_public_user(&ev["user"], "alice");
        }
    }
    carol
        .expect_none("user.updated about alice", QUIET, is_update)
        .await;
    // A status change is not a presence flip.
    bob.expect_no_presence("alice", ms(100)).await;

    // Upsert emits it too.
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "status": "back" })])
        .await;
    let ev = bob
        .wait_for("user.updated after upsert", WAIT, is_update)
        .await;
    assert_eq!(ev["user"]["status"], "back");
    assert_public_user(&ev["user"], "alice");
}

#[tokio::test]
async fn subscriptions_end_with_their_connection() {
    let s = Server::start().await;
    users(&s).await;
    let bob1 = s.connect("bob").await;
    s.subscribe_users(&bob1, &["alice"]).await;
    bob1.close(1000).await;
    let mut bob2 = s.connect("bob").await;
    // bob's new connection follows dave only; carol follows alice.
    s.subscribe_users(&bob2, &["dave"]).await;
    let mut carol = s.connect("carol").await;
    s.subscribe_users(&carol, &["alice"]).await;
    let alice = s.connect("alice").await;
    let dave = s.connect("dave").await;
    // In the same window: alice's online event is emitted (carol gets it) and bob2's socket carries events
    // (dave's), but the subscription to alice ended with bob1.
    carol.wait_presence("alice", true, WAIT).await;
    let got = bob2
        .collect(QUIET, |v| {
            v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] != "bob"
        })
        .await;
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["user"]["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["dave"],
        "bob's new connection must hear dave (followed) and not alice (followed by the closed one): {got:?}"
    );
    drop((alice, dave));
}

#[tokio::test]
async fn presence_query_without_connection_id_is_accepted() {
    let s = Server::start().await;
    users(&s).await;
    let r = s
        .query_users(
            &Auth::user("bob"),
            None,
            json!({ "filter_conditions": { "id": "alice" }, "presence": true }),
        )
        .await;
    assert_eq!(ids(&r.ok(200)["users"]), strs(&["alice"]));
}
