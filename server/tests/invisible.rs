//! Invisibility: set at connect, by upsert or partial update; persisted until an explicit `false`; to everyone
//! else an invisible user is indistinguishable from an offline one on every surface.

mod common;

use common::*;
use presence_protocol::codes::event_type;
use serde_json::{json, Value};

async fn setup(s: &Server) {
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "status": "busy" }),
        json!({ "id": "bob", "name": "Bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    s.create_channel("messaging", "c1", &["alice", "bob", "carol"], json!({}))
        .await;
}

/// An event that tells its receiver alice is around: a presence or watching event about her, or her user object
/// showing online or the invisible flag.
fn reveals_alice(v: &Value) -> bool {
    let kind = v["type"].as_str().unwrap_or("");
    v["user"]["id"] == "alice"
        && (kind == event_type::USER_PRESENCE_CHANGED
            || kind.starts_with("user.watching")
            || v["user"]["online"] == true
            || v["user"].get("invisible").is_some())
}

/// Everything bob can learn about alice says "offline".
async fn assert_looks_offline(s: &Server, viewer: &str, frozen_last_active: Option<&Value>) {
    let auth = Auth::user(viewer);
    let u = s.user_as(&auth, "alice").await;
    assert_eq!(
        u["online"], false,
        "queryUsers shows an invisible user online: {u}"
    );
    assert_public_user(&u, "alice");
    if let Some(l) = frozen_last_active {
        assert_eq!(
            time(&u["last_active"]),
            time(l),
            "last_active moved while invisible: {u}"
        );
    }
    let online = s
        .user_ids_as(&auth, json!({ "filter_conditions": { "online": true } }))
        .await;
    assert!(
        !online.contains(&"alice".to_string()),
        "filter online:true returns alice: {online:?}"
    );
    let offline = s
        .user_ids_as(&auth, json!({ "filter_conditions": { "online": false } }))
        .await;
    assert!(
        offline.contains(&"alice".to_string()),
        "filter online:false misses alice: {offline:?}"
    );

    let r = s
        .query_channel(
            &auth,
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true, "watchers": { "limit": 10 } }),
        )
        .await;
    let body = r.ok(201);
    let member = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "alice")
        .expect("alice is a member");
    assert_eq!(
        member["user"]["online"], false,
        "member object shows online: {member}"
    );
    assert_public_user(&member["user"], "alice");
    if let Some(l) = frozen_last_active {
        assert_eq!(
            time(&member["user"]["last_active"]),
            time(l),
            "member last_active moved: {member}"
        );
    }
    let watchers = ids(&body["watchers"]);
    assert!(
        !watchers.contains(&"alice".to_string()),
        "invisible alice listed as watcher: {watchers:?}"
    );
    assert_eq!(
        body["watcher_count"].as_u64(),
        Some(watchers.len() as u64),
        "watcher_count counts someone not listed: {body}"
    );
    let r = s
        .query_channels(
            &auth,
            None,
            json!({ "filter_conditions": { "cid": "messaging:c1" }, "state": true }),
        )
        .await;
    let body = r.ok(201);
    let member = body["channels"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "alice")
        .expect("alice is a member");
    assert_eq!(
        member["user"]["online"], false,
        "queryChannels member shows online: {member}"
    );
}

#[tokio::test]
async fn invisible_at_connect_looks_offline_everywhere() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let w = s.watch(&bob, "messaging", "c1", true).await;
    assert_eq!(w["watcher_count"], 1);

    let mut alice = s
        .connect_with("alice", json!({ "id": "alice", "invisible": true }))
        .await;
    // Own view: invisible and actually connected.
    assert_eq!(alice.me()["invisible"], true);
    assert_eq!(alice.me()["online"], true);
    // Watching does not reveal her either: she is not counted, bob stays the only watcher.
    let w = s.watch(&alice, "messaging", "c1", true).await;
    assert_eq!(w["watcher_count"], 1, "{w}");
    let pong = alice.health_ping().await;
    assert_eq!(pong["me"]["invisible"], true);

    // In the same window a visible member doing the same is announced to bob: events do flow to him.
    let carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", true).await;
    let got = bob.collect(ms(900), |v| v["user"]["id"].is_string()).await;
    let revealing: Vec<&Value> = got.iter().filter(|v| reveals_alice(v)).collect();
    assert!(
        revealing.is_empty(),
        "events revealing invisible alice reached bob: {revealing:?}"
    );
    for kind in [
        event_type::USER_PRESENCE_CHANGED,
        event_type::USER_WATCHING_START,
    ] {
        assert!(
            got.iter().any(|v| is_type_of(v, kind, "carol")),
            "bob got no {kind} about visible carol in the same window: {got:?}"
        );
    }
    carol.close(1000).await;
    bob.drain(ms(200)).await;
    assert_looks_offline(&s, "bob", None).await;
    assert_looks_offline(&s, "carol", None).await;

    // Disconnecting reveals nothing either.
    alice.close(1000).await;
    bob.expect_none("any event revealing alice", QUIET, reveals_alice)
        .await;
}

#[tokio::test]
async fn invisibility_persists_until_explicit_false() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;

    let a = s
        .connect_with("alice", json!({ "id": "alice", "invisible": true }))
        .await;
    a.close(1000).await;
    // Reconnecting without the key keeps it.
    let a = s
        .connect_with("alice", json!({ "id": "alice", "name": "Alice" }))
        .await;
    assert_eq!(
        a.me()["invisible"],
        true,
        "invisible must persist across reconnects"
    );
    a.close(1000).await;
    // A full-replace upsert without the key keeps it too.
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "status": "lurking" })])
        .await;
    // So does a partial update of something else.
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "status": "still lurking" }),
        &[],
    )
    .await
    .ok(200);
    let a = s.connect("alice").await;
    assert_eq!(
        a.me()["invisible"],
        true,
        "upsert without `invisible` cleared it"
    );
    bob.expect_no_presence("alice", QUIET).await;
    assert_looks_offline(&s, "bob", None).await;
    a.close(1000).await;

    // `invisible: false` at connect clears it.
    let a = s
        .connect_with("alice", json!({ "id": "alice", "invisible": false }))
        .await;
    assert_eq!(a.me()["invisible"], false);
    bob.wait_presence("alice", true, WAIT).await;
    a.close(1000).await;
    bob.wait_presence("alice", false, WAIT).await;
    let a = s.connect("alice").await;
    assert_eq!(a.me()["invisible"], false, "cleared state persists too");
    bob.wait_presence("alice", true, WAIT).await;
}

#[tokio::test]
async fn toggling_invisible_while_connected_flips_presence_for_others() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let mut carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", true).await;
    let mut tab1 = s.connect("alice").await;
    let mut tab2 = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    carol.wait_presence("alice", true, WAIT).await;
    tab1.drain(ms(200)).await;
    tab2.drain(ms(50)).await;

    // Partial update by the user herself.
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": true }),
        &[],
    )
    .await
    .ok(200);
    for ws in [&mut bob, &mut carol] {
        let ev = ws.wait_presence("alice", false, WAIT).await;
        assert_public_user(&ev["user"], "alice");
    }
    // Her own connections hear about it, once each, and see themselves invisible.
    for ws in [&mut tab1, &mut tab2] {
        let got = ws.collect(ms(900), |v| v["user"]["id"] == "alice").await;
        let presence: Vec<&Value> = got.iter().filter(|v| is_presence_of(v, "alice")).collect();
        assert_eq!(
            presence.len(),
            1,
            "own connection {}: {got:?}",
            ws.connection_id
        );
        assert!(
            got.iter()
                .any(|v| v["type"] == event_type::USER_UPDATED && v["user"]["invisible"] == true),
            "own connection {} got no user.updated with invisible:true: {got:?}",
            ws.connection_id
        );
    }
    assert_looks_offline(&s, "bob", None).await;

    // While invisible, her updates reach only her own connections: a live user.updated would tell others she
    // is active right now.
    bob.drain(ms(200)).await;
    carol.drain(ms(50)).await;
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "status": "secretly here" }),
        &[],
    )
    .await
    .ok(200);
    for ws in [&mut tab1, &mut tab2] {
        let upd = ws
            .wait_for("own user.updated", WAIT, |v| {
                is_type_of(v, event_type::USER_UPDATED, "alice")
            })
            .await;
        assert_eq!(upd["user"]["status"], "secretly here", "{upd}");
    }
    for ws in [&mut bob, &mut carol] {
        ws.expect_none("any event about alice", QUIET, |v| {
            v["user"]["id"] == "alice"
        })
        .await;
    }

    // Back to visible.
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": false }),
        &[],
    )
    .await
    .ok(200);
    bob.wait_presence("alice", true, WAIT).await;
    carol.wait_presence("alice", true, WAIT).await;

    // The same through an upsert (server token).
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "invisible": true })])
        .await;
    bob.wait_presence("alice", false, WAIT).await;
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "invisible": false })])
        .await;
    bob.wait_presence("alice", true, WAIT).await;
    // Setting the same value again is no flip.
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "invisible": false })])
        .await;
    bob.expect_no_presence("alice", QUIET).await;
}

#[tokio::test]
async fn going_invisible_while_watching_stops_watching_for_others() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c1", false).await;
    let alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", false).await;
    let ev = bob
        .wait_for("alice's watching.start", WAIT, |v| {
            is_type_of(v, event_type::USER_WATCHING_START, "alice")
        })
        .await;
    assert_eq!(ev["watcher_count"], 2);
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": true }),
        &[],
    )
    .await
    .ok(200);
    // To bob she stops watching, with the count she no longer adds to.
    let ev = bob
        .wait_for("alice's watching.stop", WAIT, |v| {
            is_type_of(v, event_type::USER_WATCHING_STOP, "alice")
        })
        .await;
    assert_eq!(ev["watcher_count"], 1, "{ev}");
    assert_eq!(ev["cid"], "messaging:c1", "{ev}");
    // The watcher list and count must not reveal alice any more.
    assert_looks_offline(&s, "bob", None).await;
    // And an invisible user starting to watch announces nothing.
    let alice2 = s.connect("alice").await;
    let mut carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", false).await;
    carol.drain(ms(200)).await;
    s.watch(&alice2, "messaging", "c1", false).await;
    carol
        .expect_none("watching event about invisible alice", QUIET, |v| {
            v["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("user.watching")
                && v["user"]["id"] == "alice"
        })
        .await;
}

#[tokio::test]
async fn last_active_seen_by_others_is_frozen_while_invisible() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let mut alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    sleep_ms(1100).await;

    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": true }),
        &[],
    )
    .await
    .ok(200);
    let ev = bob.wait_presence("alice", false, WAIT).await;
    let frozen = s.user_as(&Auth::user("bob"), "alice").await["last_active"].clone();
    assert_eq!(
        time(&ev["user"]["last_active"]),
        time(&frozen),
        "the offline event and queryUsers disagree on last_active"
    );

    // Alice keeps being active: pings refresh her own last_active...
    sleep_ms(1100).await;
    let pong = alice.health_ping().await;
    let own = time(&pong["me"]["last_active"]);
    assert!(
        own > time(&frozen) + chrono::Duration::milliseconds(900),
        "own last_active {own} not refreshed"
    );
    // ...but others keep seeing the frozen value, also across reconnects and in events.
    assert_looks_offline(&s, "bob", Some(&frozen)).await;
    alice.close(1000).await;
    let again = s.connect("alice").await;
    assert_looks_offline(&s, "bob", Some(&frozen)).await;
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "status": "hidden" }),
        &[],
    )
    .await
    .ok(200);
    // Her update is not broadcast to others while she is invisible; what they can read still says offline.
    bob.expect_none("any event about invisible alice", QUIET, |v| {
        v["user"]["id"] == "alice"
    })
    .await;
    assert_looks_offline(&s, "bob", Some(&frozen)).await;

    // Visible again: a fresh last_active comes with the online event.
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": false }),
        &[],
    )
    .await
    .ok(200);
    let ev = bob.wait_presence("alice", true, WAIT).await;
    assert!(time(&ev["user"]["last_active"]) > time(&frozen), "{ev}");
    drop(again);
}

#[tokio::test]
async fn invisible_set_while_offline_then_connecting() {
    let s = Server::start().await;
    setup(&s).await;
    s.partial_update(&Auth::Server, "alice", json!({ "invisible": true }), &[])
        .await
        .ok(200);
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    assert_eq!(alice.me()["invisible"], true);
    assert_eq!(alice.me()["online"], true);
    bob.expect_no_presence("alice", QUIET).await;
    assert_looks_offline(&s, "bob", None).await;
    // Other REST views from other users hide the flag itself.
    let u = s.user_as(&Auth::user("carol"), "alice").await;
    assert!(u.get("invisible").is_none(), "{u}");
}

/// Everything bob reads about alice: her user through queryUsers and as a member of c1.
async fn alice_as_bob_sees_her(s: &Server) -> (Value, Value) {
    let user = s.user_as(&Auth::user("bob"), "alice").await;
    let r = s
        .query_channel(
            &Auth::user("bob"),
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true }),
        )
        .await;
    let member = r.ok(201)["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "alice")
        .cloned()
        .expect("alice is a member of c1");
    (user, member)
}

#[tokio::test]
async fn re_asserting_invisible_changes_nothing_others_can_see() {
    let s = Server::start().await;
    setup(&s).await;
    s.partial_update(&Auth::Server, "alice", json!({ "invisible": true }), &[])
        .await
        .ok(200);
    let _alice = s
        .connect_with("alice", json!({ "id": "alice", "invisible": true }))
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    s.watch(&bob, "messaging", "c1", true).await;
    let before = alice_as_bob_sees_her(&s).await;

    // What an app sends at every start, on each path, a moment later (so a moved `updated_at` would show).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "invisible": true }),
        &[],
    )
    .await
    .ok(200);
    let same = json!({ "id": "alice", "name": "Alice", "status": "busy", "invisible": true });
    for auth in [Auth::user("alice"), Auth::Server] {
        s.upsert_as(&auth, std::slice::from_ref(&same))
            .await
            .ok(201);
    }
    let _again = s
        .connect_with(
            "alice",
            json!({ "id": "alice", "name": "Alice", "invisible": true }),
        )
        .await;

    bob.expect_none("an event about alice", QUIET, |v| {
        v["user"]["id"] == "alice"
    })
    .await;
    let after = alice_as_bob_sees_her(&s).await;
    assert_eq!(
        serde_json::to_string(&before).unwrap(),
        serde_json::to_string(&after).unwrap()
    );
}

#[tokio::test]
async fn an_identical_upsert_changes_nothing_others_can_see() {
    let s = Server::start().await;
    setup(&s).await;
    let _alice = s.connect("alice").await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    s.watch(&bob, "messaging", "c1", true).await;
    bob.drain(QUIET).await;
    let before = alice_as_bob_sees_her(&s).await;

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let same = json!({ "id": "alice", "name": "Alice", "status": "busy" });
    s.upsert_as(&Auth::user("alice"), &[same]).await.ok(201);
    s.partial_update(
        &Auth::user("alice"),
        "alice",
        json!({ "name": "Alice" }),
        &[],
    )
    .await
    .ok(200);

    bob.expect_none("an event about alice", QUIET, |v| {
        v["user"]["id"] == "alice"
    })
    .await;
    assert_eq!(
        serde_json::to_string(&before).unwrap(),
        serde_json::to_string(&alice_as_bob_sees_her(&s).await).unwrap()
    );
    // A real change still moves `updated_at` and tells bob.
    s.partial_update(&Auth::user("alice"), "alice", json!({ "name": "Al" }), &[])
        .await
        .ok(200);
    bob.wait_type(presence_protocol::codes::event_type::USER_UPDATED, WAIT)
        .await;
    let (user, _) = alice_as_bob_sees_her(&s).await;
    assert!(
        time(&user["updated_at"]) > time(&before.0["updated_at"]),
        "{user}"
    );
}

#[tokio::test]
async fn unsetting_invisible_makes_an_invisible_user_visible_again() {
    let s = Server::start().await;
    setup(&s).await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let mut alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    for auth in [Auth::user("alice"), Auth::Server] {
        s.partial_update(&auth, "alice", json!({ "invisible": true }), &[])
            .await
            .ok(200);
        bob.wait_presence("alice", false, WAIT).await;
        alice.drain(ms(200)).await;

        // `unset` of the flag is the same as `false`: peers see her online again, and so does every read.
        let r = s
            .partial_update(&auth, "alice", json!({}), &["invisible"])
            .await;
        assert_ne!(
            r.ok(200)["users"]["alice"]["invisible"],
            true,
            "{auth:?}: the answer to unset [\"invisible\"]: {}",
            r.text
        );
        let ev = bob.wait_presence("alice", true, WAIT).await;
        assert_public_user(&ev["user"], "alice");
        assert_eq!(s.user_as(&Auth::user("bob"), "alice").await["online"], true);
        let own = alice
            .wait_for("own user.updated", WAIT, |v| {
                is_type_of(v, event_type::USER_UPDATED, "alice")
            })
            .await;
        assert_eq!(own["user"]["invisible"], false, "{auth:?}: {own}");
    }
}
