//! Channel permissions (protocol section 10): members-only channel types are read, watched and listed only by their
//! members and server tokens, `livestream` by anyone; a user creates only channels they are a member of; unknown
//! types and server-owned fields in `data` are refused.

mod common;

use common::*;
use presence_protocol::codes::{error_code, event_type};
use serde_json::{json, Value};

const MEMBERS_ONLY: [&str; 4] = ["messaging", "team", "commerce", "gaming"];

async fn users(s: &Server, ids: &[&str]) {
    let list: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    s.upsert(&list).await;
}

/// A get-or-create of an existing channel, as `auth`.
async fn get(s: &Server, auth: &Auth, ctype: &str, id: &str) -> Resp {
    s.query_channel(auth, None, ctype, Some(id), json!({ "state": true }))
        .await
}

/// Asserts a 403 / code 17 refusal whose message names `cid`.
fn assert_refused(r: &Resp, cid: &str) {
    let err = r.err(403, error_code::NOT_ALLOWED);
    assert!(err.message.contains(cid), "{}: {}", r.desc, err.message);
}

#[tokio::test]
async fn members_only_channels_are_read_by_members_and_server_tokens_only() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob", "carol"]).await;
    for ctype in MEMBERS_ONLY {
        s.create_channel(ctype, "c1", &["alice", "bob"], json!({ "topic": "x" }))
            .await;
        let cid = format!("{ctype}:c1");
        // A member and a server token read it.
        let body = get(&s, &Auth::user("alice"), ctype, "c1").await;
        assert_eq!(body.ok(201)["channel"]["cid"], cid.as_str());
        get(&s, &Auth::Server, ctype, "c1").await.ok(201);
        // Anyone else is refused, also when asking to watch or naming themselves as a member.
        let carol = Auth::user("carol");
        assert_refused(&get(&s, &carol, ctype, "c1").await, &cid);
        let r = s
            .query_channel(
                &carol,
                None,
                ctype,
                Some("c1"),
                json!({ "data": { "members": ["carol"] }, "watch": true, "presence": true }),
            )
            .await;
        assert_refused(&r, &cid);
        assert_refused(&s.stop_watching(&carol, None, ctype, "c1").await, &cid);
        s.stop_watching(&Auth::user("bob"), None, ctype, "c1")
            .await
            .ok(201);
        // Nothing the refused calls asked for changed the channel.
        let body = get(&s, &Auth::Server, ctype, "c1").await;
        assert_eq!(body.ok(201)["channel"]["member_count"], 2, "{}", body.text);
    }
}

#[tokio::test]
async fn livestream_channels_are_read_by_any_user_and_other_types_are_not() {
    let s = Server::in_process().await;
    users(&s, &["alice", "carol"]).await;
    // The same channel twice, only the type differs.
    for ctype in ["livestream", "messaging"] {
        s.create_channel(ctype, "show", &["alice"], json!({})).await;
    }
    let carol = Auth::user("carol");
    let body = get(&s, &carol, "livestream", "show").await;
    assert_eq!(body.ok(201)["channel"]["cid"], "livestream:show");
    s.stop_watching(&carol, None, "livestream", "show")
        .await
        .ok(201);
    assert_refused(
        &get(&s, &carol, "messaging", "show").await,
        "messaging:show",
    );
    let r = s
        .query_channels(&carol, None, json!({ "filter_conditions": {} }))
        .await;
    assert_eq!(cids(r.ok(201)), strs(&["livestream:show"]));
}

#[tokio::test]
async fn query_channels_lists_only_readable_channels_and_pages_over_them() {
    let s = Server::in_process().await;
    users(&s, &["alice", "carol"]).await;
    // Ranks 1..=8: carol is a member of the even ones (and 7 is a livestream anyone reads).
    for rank in 1..=8 {
        let members: &[&str] = if rank % 2 == 0 {
            &["alice", "carol"]
        } else {
            &["alice"]
        };
        let ctype = if rank == 7 { "livestream" } else { "messaging" };
        s.create_channel(ctype, &format!("c{rank}"), members, json!({ "rank": rank }))
            .await;
    }
    let list = |auth: Auth, extra: Value| {
        let s = &s;
        async move {
            let mut body = json!({
                "filter_conditions": {},
                "sort": [{ "field": "rank", "direction": 1 }],
            });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            cids(s.query_channels(&auth, None, body).await.ok(201))
        }
    };
    let carol = || Auth::user("carol");
    assert_eq!(
        list(carol(), json!({})).await,
        strs(&[
            "messaging:c2",
            "messaging:c4",
            "messaging:c6",
            "livestream:c7",
            "messaging:c8"
        ])
    );
    // limit and offset count the channels carol may read, not all of them.
    assert_eq!(
        list(carol(), json!({ "limit": 2, "offset": 1 })).await,
        strs(&["messaging:c4", "messaging:c6"])
    );
    assert_eq!(
        list(carol(), json!({ "limit": 2, "offset": 4 })).await,
        strs(&["messaging:c8"])
    );
    // Naming channels she may not read does not show them either.
    assert_eq!(
        list(
            carol(),
            json!({ "filter_conditions": { "cid": { "$in": ["messaging:c1", "messaging:c2", "messaging:c3"] } } })
        )
        .await,
        strs(&["messaging:c2"])
    );
    // A server token lists everything.
    assert_eq!(list(Auth::Server, json!({})).await.len(), 8);
}

#[tokio::test]
async fn a_user_creates_only_channels_they_are_a_member_of() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob", "carol"]).await;
    let alice = Auth::user("alice");
    let create = |ctype: &'static str, id: Option<&'static str>, data: Value| {
        let s = &s;
        let alice = alice.clone();
        async move {
            s.query_channel(
                &alice,
                None,
                ctype,
                id,
                json!({ "data": data, "state": true }),
            )
            .await
        }
    };
    for &ctype in MEMBERS_ONLY.iter().chain(&["livestream"]) {
        assert_refused(
            &create(
                ctype,
                Some("theirs"),
                json!({ "members": ["bob", "carol"] }),
            )
            .await,
            &format!("{ctype}:theirs"),
        );
        assert_refused(
            &create(ctype, Some("empty"), json!({})).await,
            &format!("{ctype}:empty"),
        );
        let body = create(ctype, Some("ours"), json!({ "members": ["alice", "bob"] })).await;
        assert_eq!(body.ok(201)["channel"]["member_count"], 2);
    }
    // The distinct channel of a member set without alice is refused on both paths.
    let r = create("messaging", None, json!({ "members": ["bob", "carol"] })).await;
    let err = r.err(403, error_code::NOT_ALLOWED);
    assert!(
        err.message.contains("messaging:!members-"),
        "{}",
        err.message
    );
    // Nothing refused was created; a server token creates channels without being a member.
    let r = s
        .query_channels(&Auth::Server, None, json!({ "filter_conditions": {} }))
        .await;
    let mut got = cids(r.ok(201));
    got.sort();
    let mut want: Vec<String> = MEMBERS_ONLY
        .iter()
        .chain(&["livestream"])
        .map(|t| format!("{t}:ours"))
        .collect();
    want.sort();
    assert_eq!(got, want);
    s.create_channel("messaging", "server-made", &["bob"], json!({}))
        .await;
}

#[tokio::test]
async fn distinct_channels_are_read_by_their_members_only() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob", "carol"]).await;
    let r = s
        .query_channel(
            &Auth::user("alice"),
            None,
            "messaging",
            None,
            json!({ "data": { "members": ["alice", "bob"] }, "state": true }),
        )
        .await;
    let id = r.ok(201)["channel"]["id"].as_str().unwrap().to_string();
    let cid = format!("messaging:{id}");
    // bob, a member, reads it by its derived id; carol is refused by id and by the member set.
    get(&s, &Auth::user("bob"), "messaging", &id).await.ok(201);
    assert_refused(&get(&s, &Auth::user("carol"), "messaging", &id).await, &cid);
    let r = s
        .query_channel(
            &Auth::user("carol"),
            None,
            "messaging",
            None,
            json!({ "data": { "members": ["alice", "bob"] } }),
        )
        .await;
    assert_refused(&r, &cid);
}

#[tokio::test]
async fn server_owned_fields_in_channel_data_are_refused() {
    let s = Server::in_process().await;
    users(&s, &["alice"]).await;
    let owned = [
        ("cid", json!("messaging:other")),
        ("id", json!("other")),
        ("type", json!("team")),
        ("config", json!({ "connect_events": false })),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("updated_at", json!("2020-01-01T00:00:00Z")),
        ("deleted_at", json!("2020-01-01T00:00:00Z")),
        ("member_count", json!(1000)),
        ("own_capabilities", json!(["update-channel"])),
        ("frozen", json!(true)),
        ("disabled", json!(true)),
        ("watcher_count", json!(7)),
        ("watchers", json!([])),
    ];
    for (i, (field, value)) in owned.iter().enumerate() {
        for auth in [Auth::user("alice"), Auth::Server] {
            let r = s
                .query_channel(
                    &auth,
                    None,
                    "messaging",
                    Some(&format!("c{i}")),
                    json!({ "data": { "members": ["alice"], *field: value } }),
                )
                .await;
            let err = r.err(400, error_code::INPUT);
            assert!(
                err.message.contains(&format!("data.{field}")),
                "{field}: {}",
                err.message
            );
        }
    }
    // Nothing was created.
    let r = s
        .query_channels(&Auth::Server, None, json!({ "filter_conditions": {} }))
        .await;
    assert!(cids(r.ok(201)).is_empty(), "{}", r.text);
    // The inputs the SDK and server SDKs send are still accepted; custom fields come back once, flat.
    let r = s
        .query_channel(
            &Auth::user("alice"),
            None,
            "messaging",
            Some("ok"),
            json!({ "data": { "members": [{ "user_id": "alice" }], "created_by_id": "alice", "name": "Room", "team": "red" } }),
        )
        .await;
    let body = r.ok(201);
    assert_eq!(body["channel"]["name"], "Room");
    assert_eq!(body["channel"]["team"], "red");
    assert_eq!(body["channel"]["member_count"], 1);
    assert!(body["channel"].get("members").is_none(), "{body}");
    assert!(body["channel"].get("created_by_id").is_none(), "{body}");
    assert_eq!(r.text.matches("\"member_count\"").count(), 1, "{}", r.text);
}

#[tokio::test]
async fn unknown_channel_types_are_refused() {
    let s = Server::in_process().await;
    users(&s, &["alice"]).await;
    for auth in [Auth::user("alice"), Auth::Server] {
        let r = s
            .query_channel(
                &auth,
                None,
                "custom_type",
                Some("c1"),
                json!({ "data": { "members": ["alice"] } }),
            )
            .await;
        let err = r.err(400, error_code::INPUT);
        assert!(err.message.contains("custom_type"), "{}", err.message);
    }
}

fn is_watching_event(v: &Value) -> bool {
    v["type"] == event_type::USER_WATCHING_START || v["type"] == event_type::USER_WATCHING_STOP
}

#[tokio::test]
async fn only_members_watch_a_members_only_channel() {
    let s = Server::start().await;
    users(&s, &["alice", "bob", "carol"]).await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    s.create_channel("livestream", "show", &["alice"], json!({}))
        .await;
    let mut carol = s.connect("carol").await;
    let carol_auth = Auth::user("carol");
    // carol may not watch c1, neither directly nor through queryChannels.
    let r = s
        .query_channel(
            &carol_auth,
            Some(&carol.connection_id),
            "messaging",
            Some("c1"),
            json!({ "state": true, "watch": true, "presence": true }),
        )
        .await;
    assert_refused(&r, "messaging:c1");
    let r = s
        .query_channels(
            &carol_auth,
            Some(&carol.connection_id),
            json!({ "filter_conditions": {}, "watch": true, "presence": true }),
        )
        .await;
    assert_eq!(cids(r.ok(201)), strs(&["livestream:show"]));
    // alice watches both: carol hears alice start watching the livestream, and nothing of c1.
    let mut alice = s.connect("alice").await;
    let w = s.watch(&alice, "messaging", "c1", true).await;
    assert_eq!(w["watcher_count"], 1, "carol does not watch c1: {w}");
    s.watch(&alice, "livestream", "show", false).await;
    let ev = carol
        .wait_for("alice watching the livestream", WAIT, is_watching_event)
        .await;
    assert_eq!(ev["cid"], "livestream:show", "{ev}");
    carol
        .expect_none("watching events of c1", QUIET, |v| {
            v["cid"] == "messaging:c1"
        })
        .await;
    // bob, a member, watches c1 and alice hears it.
    let bob = s.connect("bob").await;
    s.watch(&bob, "messaging", "c1", false).await;
    alice
        .wait_for("bob watching c1", WAIT, |v| {
            v["type"] == event_type::USER_WATCHING_START && v["user"]["id"] == "bob"
        })
        .await;
    carol
        .expect_none("bob's watching event on c1", QUIET, |v| {
            v["cid"] == "messaging:c1"
        })
        .await;
}
