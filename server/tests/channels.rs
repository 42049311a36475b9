//! Channel endpoints: get-or-create by id, distinct channels, query channels with filters, stop-watching,
//! watchers and `user.watching.*` events.

mod common;

use common::*;
use presence_protocol::codes::{error_code, event_type};
use presence_protocol::{ChannelStateResponse, QueryChannelsResponse};
use serde_json::{json, Value};

fn member_ids(state: &Value) -> Vec<String> {
    let mut v: Vec<String> = state["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members array in {state}"))
        .iter()
        .map(|m| m["user_id"].as_str().expect("member user_id").to_string())
        .collect();
    v.sort();
    v
}

fn member<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == id)
        .unwrap_or_else(|| panic!("member {id} missing in {state}"))
}

#[tokio::test]
async fn channel_query_gets_or_creates() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "status": "busy" }),
        json!({ "id": "bob", "name": "Bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    let _alice = s.connect("alice").await;

    let r = s
        .query_channel(
            &Auth::user("bob"),
            None,
            "messaging",
            Some("c1"),
            json!({ "data": { "members": ["alice", "bob", { "user_id": "carol" }], "color": "blue" }, "state": true }),
        )
        .await;
    let body = r.ok(201).clone();
    let parsed: ChannelStateResponse =
        serde_json::from_value(body.clone()).expect("ChannelStateResponse shape");
    assert_eq!(parsed.channel.cid, "messaging:c1");
    assert_eq!(parsed.channel.id, "c1");
    assert_eq!(parsed.channel.channel_type, "messaging");
    assert!(
        parsed.channel.config.connect_events,
        "messaging channels have connect_events"
    );
    assert_eq!(parsed.channel.member_count, 3);
    assert_eq!(
        body["channel"]["color"], "blue",
        "custom channel data is flat: {body}"
    );
    for key in ["messages", "pinned_messages", "members", "threads"] {
        assert!(body[key].is_array(), "{key} must be an array: {body}");
    }
    assert!(
        body["watcher_count"].is_u64(),
        "watcher_count always present: {body}"
    );
    assert_eq!(member_ids(&body), strs(&["alice", "bob", "carol"]));
    let a = &member(&body, "alice")["user"];
    assert_public_user(a, "alice");
    assert_eq!(a["online"], true);
    assert_eq!(a["name"], "Alice");
    assert_eq!(a["status"], "busy");
    time(&a["last_active"]);
    assert_eq!(member(&body, "bob")["user"]["online"], false);
    assert!(member(&body, "bob")["channel_role"].is_string());
    let created = time(&body["channel"]["created_at"]);

    // Getting it again returns the same channel, members intact.
    let again = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true }),
        )
        .await;
    let again = again.ok(201);
    assert_eq!(time(&again["channel"]["created_at"]), created);
    assert_eq!(member_ids(again), strs(&["alice", "bob", "carol"]));
    assert_eq!(again["channel"]["color"], "blue");
}

#[tokio::test]
async fn distinct_channel_id_comes_from_members() {
    let s = Server::in_process().await;
    s.upsert(&[
        json!({ "id": "alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    let q = |members: Value| {
        let s = &s;
        async move {
            let r = s
                .query_channel(
                    &Auth::user("alice"),
                    None,
                    "messaging",
                    None,
                    json!({ "data": { "members": members }, "state": true }),
                )
                .await;
            r.ok(201).clone()
        }
    };
    let ab = q(json!(["alice", "bob"])).await;
    let id = ab["channel"]["id"]
        .as_str()
        .expect("channel id")
        .to_string();
    assert!(id.starts_with("!members-"), "distinct channel id {id:?}");
    assert_eq!(ab["channel"]["cid"], format!("messaging:{id}"));
    assert_eq!(member_ids(&ab), strs(&["alice", "bob"]));
    let ba = q(json!(["bob", "alice"])).await;
    assert_eq!(
        ba["channel"]["id"],
        id.as_str(),
        "same members, same channel"
    );
    let ac = q(json!(["alice", "carol"])).await;
    assert_ne!(
        ac["channel"]["id"],
        id.as_str(),
        "other members, other channel"
    );
    // The derived id is usable on the by-id path.
    let by_id = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some(&id),
            json!({ "state": true }),
        )
        .await;
    assert_eq!(member_ids(by_id.ok(201)), strs(&["alice", "bob"]));
}

#[tokio::test]
async fn channel_ids_follow_the_shared_rule_ascii_1_to_64() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "alice" })]).await;
    let create = |id: String| {
        let s = &s;
        async move {
            s.query_channel(
                &Auth::Server,
                None,
                "messaging",
                Some(&id),
                json!({ "data": { "members": ["alice"] } }),
            )
            .await
        }
    };
    let longest = "x".repeat(64);
    assert_eq!(
        create(longest.clone()).await.ok(201)["channel"]["id"],
        longest.as_str()
    );
    assert_eq!(
        create("a-b_c!1".into()).await.ok(201)["channel"]["id"],
        "a-b_c!1"
    );
    // Non-ASCII letters (percent-encoded "café") and ids over 64 characters are refused, as the client does.
    for id in ["caf%C3%A9".to_string(), "x".repeat(65)] {
        let err = create(id.clone()).await.err(400, 4);
        assert!(
            err.message.contains("1 to 64 ASCII"),
            "{id}: {}",
            err.message
        );
    }
    let err = s
        .query_channel(&Auth::Server, None, "t%C3%ABam", Some("general"), json!({}))
        .await
        .err(400, 4);
    assert!(err.message.contains("ASCII"), "{}", err.message);
}

#[tokio::test]
async fn query_channels_filters_and_sort() {
    let s = Server::in_process().await;
    s.upsert(&[
        json!({ "id": "alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    s.create_channel(
        "messaging",
        "c1",
        &["alice", "bob"],
        json!({ "color": "blue", "rank": 1 }),
    )
    .await;
    s.create_channel(
        "messaging",
        "c2",
        &["bob", "carol"],
        json!({ "color": "red", "rank": 2 }),
    )
    .await;
    s.create_channel("team", "t1", &["alice"], json!({ "rank": 3 }))
        .await;

    let query = |filter: Value, extra: Value| {
        let s = &s;
        async move {
            let mut body = json!({ "filter_conditions": filter, "state": true });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = s.query_channels(&Auth::Server, None, body.clone()).await;
            assert_eq!(r.status, 201, "{body}: {}", r.text);
            serde_json::from_value::<QueryChannelsResponse>(r.json.clone())
                .expect("QueryChannelsResponse shape");
            let got = cids(&r.json);
            if extra.get("sort").is_some() {
                got
            } else {
                sorted(got)
            }
        }
    };
    let none = json!({});
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &["messaging:c1", "messaging:c2", "team:t1"]),
        (
            json!({ "cid": { "$in": ["messaging:c1", "team:t1"] } }),
            &["messaging:c1", "team:t1"],
        ),
        (json!({ "cid": "messaging:c2" }), &["messaging:c2"]),
        (json!({ "id": "c2" }), &["messaging:c2"]),
        (json!({ "type": "team" }), &["team:t1"]),
        (
            json!({ "type": "messaging" }),
            &["messaging:c1", "messaging:c2"],
        ),
        (
            json!({ "members": { "$in": ["alice"] } }),
            &["messaging:c1", "team:t1"],
        ),
        (
            json!({ "members": { "$in": ["carol"] } }),
            &["messaging:c2"],
        ),
        (
            json!({ "members": { "$in": ["alice", "carol"] } }),
            &["messaging:c1", "messaging:c2", "team:t1"],
        ),
        (json!({ "color": "red" }), &["messaging:c2"]),
        (
            json!({ "rank": { "$gte": 2 } }),
            &["messaging:c2", "team:t1"],
        ),
        (
            json!({ "$or": [{ "color": "blue" }, { "type": "team" }] }),
            &["messaging:c1", "team:t1"],
        ),
        (
            json!({ "type": "messaging", "members": { "$in": ["bob"] } }),
            &["messaging:c1", "messaging:c2"],
        ),
    ];
    let mut wrong = Vec::new();
    for (filter, want) in cases {
        let got = query(filter.clone(), none.clone()).await;
        if got != strs(want) {
            wrong.push(format!("{filter}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "channel filters gave wrong results:\n{}",
        wrong.join("\n")
    );

    assert_eq!(
        query(
            json!({}),
            json!({ "sort": [{ "field": "rank", "direction": -1 }] })
        )
        .await,
        strs(&["team:t1", "messaging:c2", "messaging:c1"])
    );
    assert_eq!(
        query(
            json!({}),
            json!({ "sort": [{ "field": "rank", "direction": 1 }] })
        )
        .await,
        strs(&["messaging:c1", "messaging:c2", "team:t1"])
    );
    assert_eq!(
        query(
            json!({}),
            json!({ "sort": [{ "field": "rank", "direction": 1 }], "limit": 1, "offset": 1 })
        )
        .await,
        strs(&["messaging:c2"])
    );

    // Members and their users are included.
    let r = s
        .query_channels(
            &Auth::Server,
            None,
            json!({ "filter_conditions": { "cid": "messaging:c1" }, "state": true }),
        )
        .await;
    let body = r.ok(201);
    assert_eq!(member_ids(&body["channels"][0]), strs(&["alice", "bob"]));
    assert_public_user(&member(&body["channels"][0], "alice")["user"], "alice");
}

#[tokio::test]
async fn stop_watching_known_and_unknown_channel() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    s.create_channel("messaging", "c1", &["alice", "bob", "carol"], json!({}))
        .await;
    let mut ws = s.connect("alice").await;
    s.watch(&ws, "messaging", "c1", false).await;
    // While watching, alice hears bob start watching.
    let mut bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c1", false).await;
    ws.wait_for("bob's user.watching.start", WAIT, |v| {
        is_watching(v, event_type::USER_WATCHING_START, "bob")
    })
    .await;
    let r = s
        .stop_watching(
            &Auth::user("alice"),
            Some(&ws.connection_id),
            "messaging",
            "c1",
        )
        .await;
    r.ok(201);
    // After stop-watching she hears nothing of the channel's watchers any more, while bob, still watching, does.
    bob.wait_for("alice's user.watching.stop", WAIT, |v| {
        is_watching(v, event_type::USER_WATCHING_STOP, "alice")
    })
    .await;
    let carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", false).await;
    bob.wait_for("carol's user.watching.start", WAIT, |v| {
        is_watching(v, event_type::USER_WATCHING_START, "carol")
    })
    .await;
    ws.expect_none("watching events after stop-watching", QUIET, |v| {
        v["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("user.watching")
    })
    .await;
    let r = s
        .stop_watching(
            &Auth::user("alice"),
            Some(&ws.connection_id),
            "messaging",
            "nope",
        )
        .await;
    r.err(404, error_code::DOES_NOT_EXIST);
    // Unknown channel type too.
    let r = s
        .stop_watching(
            &Auth::user("alice"),
            Some(&ws.connection_id),
            "nosuchtype",
            "c1",
        )
        .await;
    r.err(404, error_code::DOES_NOT_EXIST);
}

fn is_watching(v: &Value, kind: &str, user: &str) -> bool {
    v["type"] == kind && v["user"]["id"] == user
}

#[tokio::test]
async fn watching_events_and_watchers() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    s.create_channel("messaging", "c1", &["alice", "bob", "carol"], json!({}))
        .await;

    let mut bob = s.connect("bob").await;
    let first = s.watch(&bob, "messaging", "c1", false).await;
    assert_eq!(
        first["watcher_count"], 1,
        "bob is the only watcher: {first}"
    );
    let mut carol = s.connect("carol").await;
    let second = s.watch(&carol, "messaging", "c1", false).await;
    assert_eq!(second["watcher_count"], 2);
    let ev = bob
        .wait_for("carol's user.watching.start", WAIT, |v| {
            is_watching(v, event_type::USER_WATCHING_START, "carol")
        })
        .await;
    assert_eq!(ev["watcher_count"], 2);

    let mut alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", false).await;
    for ws in [&mut bob, &mut carol] {
        let ev = ws
            .wait_for("alice's user.watching.start", WAIT, |v| {
                is_watching(v, event_type::USER_WATCHING_START, "alice")
            })
            .await;
        assert_eq!(ev["cid"], "messaging:c1", "{ev}");
        assert_eq!(ev["channel_id"], "c1", "{ev}");
        assert_eq!(ev["channel_type"], "messaging", "{ev}");
        assert_eq!(ev["watcher_count"], 3, "{ev}");
        assert_public_user(&ev["user"], "alice");
        assert_eq!(ev["user"]["name"], "Alice");
        assert_eq!(ev["user"]["online"], true);
        time(&ev["created_at"]);
    }
    alice
        .expect_none("own watching event", QUIET, |v| {
            is_watching(v, event_type::USER_WATCHING_START, "alice")
        })
        .await;

    // The watchers list on request.
    let r = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true, "watchers": { "limit": 10 } }),
        )
        .await;
    let body = r.ok(201);
    assert_eq!(body["watcher_count"], 3);
    assert_eq!(
        sorted(ids(&body["watchers"])),
        strs(&["alice", "bob", "carol"])
    );
    for w in body["watchers"].as_array().unwrap() {
        assert_eq!(w["online"], true, "{w}");
    }

    // A second tab of alice watching changes nothing for others.
    let alice2 = s.connect("alice").await;
    s.watch(&alice2, "messaging", "c1", false).await;
    // Stopping on one tab while the other still watches: nothing either.
    s.stop_watching(
        &Auth::user("alice"),
        Some(&alice2.connection_id),
        "messaging",
        "c1",
    )
    .await
    .ok(201);
    bob.expect_none("watching event for alice's second tab", QUIET, |v| {
        v["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("user.watching")
            && v["user"]["id"] == "alice"
    })
    .await;

    // Last of alice's watching connections stops: watching.stop with the new count.
    s.stop_watching(
        &Auth::user("alice"),
        Some(&alice.connection_id),
        "messaging",
        "c1",
    )
    .await
    .ok(201);
    let ev = bob
        .wait_for("alice's user.watching.stop", WAIT, |v| {
            is_watching(v, event_type::USER_WATCHING_STOP, "alice")
        })
        .await;
    assert_eq!(ev["watcher_count"], 2, "{ev}");
    assert_eq!(ev["cid"], "messaging:c1");

    // Closing the socket stops watching too. bob hears it; alice, who stopped watching on both tabs, does not.
    alice.drain(ms(100)).await;
    carol.close(1000).await;
    let ev = bob
        .wait_for("carol's user.watching.stop", WAIT, |v| {
            is_watching(v, event_type::USER_WATCHING_STOP, "carol")
        })
        .await;
    assert_eq!(ev["watcher_count"], 1, "{ev}");
    alice
        .expect_none("watching events after stop-watching", ms(300), |v| {
            v["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("user.watching")
        })
        .await;
    let r = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("c1"),
            json!({ "state": true, "watchers": { "limit": 10 } }),
        )
        .await;
    let body = r.ok(201);
    assert_eq!(body["watcher_count"], 1);
    assert_eq!(ids(&body["watchers"]), strs(&["bob"]));
    drop(alice2);
}

#[tokio::test]
async fn watchers_of_other_channels_hear_nothing() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "carol" }),
    ])
    .await;
    s.create_channel("messaging", "c1", &["alice", "bob", "carol"], json!({}))
        .await;
    s.create_channel("messaging", "c2", &["alice", "bob", "carol"], json!({}))
        .await;
    let mut bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c2", false).await;
    let mut carol = s.connect("carol").await;
    s.watch(&carol, "messaging", "c1", false).await;
    let alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", false).await;
    // carol watches c1 and hears alice start watching it; bob, on c2, hears nothing.
    let ev = carol
        .wait_for("alice's user.watching.start on c1", WAIT, |v| {
            is_watching(v, event_type::USER_WATCHING_START, "alice")
        })
        .await;
    assert_eq!(ev["cid"], "messaging:c1", "{ev}");
    bob.expect_none(
        "watching events of a channel bob does not watch",
        QUIET,
        |v| {
            v["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("user.watching")
        },
    )
    .await;
}

#[tokio::test]
async fn sorting_channels_on_a_field_of_mixed_types_gives_one_total_order_both_ways() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "alice" })]).await;
    // In the order the sort must give: numbers, strings, objects, arrays, booleans, timestamps (as instants).
    let ranks = [
        json!(-2),
        json!(10),
        json!("a"),
        json!("b"),
        json!({ "k": 1 }),
        json!([0]),
        json!(false),
        json!(true),
        json!("2024-01-01T12:00:00+03:00"),
        json!("2024-01-01T10:00:00Z"),
        json!("2030-01-01T00:00:00Z"),
    ];
    // Ids that sort against the rank order, created in reverse.
    let ids: Vec<String> = (0..ranks.len())
        .map(|i| format!("c{:02}", (i * 5) % 11))
        .collect();
    for (id, rank) in ids.iter().zip(&ranks).rev() {
        s.create_channel("messaging", id, &["alice"], json!({ "rank": rank }))
            .await;
    }
    let ascending: Vec<String> = ids.iter().map(|id| format!("messaging:{id}")).collect();
    let mut descending = ascending.clone();
    descending.reverse();
    for (direction, want) in [(1, ascending), (-1, descending)] {
        let r = s
            .query_channels(
                &Auth::Server,
                None,
                json!({
                    "filter_conditions": {},
                    "sort": [{ "field": "rank", "direction": direction }],
                    "limit": 30,
                }),
            )
            .await;
        assert_eq!(cids(r.ok(201)), want, "sort on rank, direction {direction}");
    }
}
