//! Channel membership changes: `POST /channels/{type}/{id}` with `add_members` / `remove_members`, as the SDKs'
//! `addMembers` / `removeMembers` send it — who may, what is refused and with which code, what the channel's
//! watchers hear (`member.added`, `member.removed`), whose presence they follow afterwards, and that the changes
//! survive a restart.

mod common;

use common::*;
use presence_protocol::codes::{error_code, event_type};
use presence_protocol::UpdateChannelResponse;
use serde_json::{json, Value};

/// The member ids of a channel answer (or update answer), in order.
fn member_ids(state: &Value) -> Vec<String> {
    state["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members array in {state}"))
        .iter()
        .map(|m| m["user_id"].as_str().expect("member user_id").to_string())
        .collect()
}

/// The members of `messaging:{id}` as a server token reads them.
async fn members_of(s: &Server, id: &str) -> Vec<String> {
    let state = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some(id),
            json!({ "state": true }),
        )
        .await;
    member_ids(state.ok(201))
}

async fn users(s: &Server, ids: &[&str]) {
    let users: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    s.upsert(&users).await;
}

#[tokio::test]
async fn a_server_token_and_a_members_token_add_and_remove_members() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob", "carol", "dave"]).await;
    s.create_channel(
        "messaging",
        "c1",
        &["alice", "bob"],
        json!({ "topic": "x" }),
    )
    .await;

    let r = s
        .update_channel(
            &Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": ["carol"] }),
        )
        .await;
    let body = r.ok(201).clone();
    let parsed: UpdateChannelResponse =
        serde_json::from_value(body.clone()).expect("UpdateChannelResponse shape");
    assert_eq!(parsed.channel.cid, "messaging:c1");
    assert_eq!(parsed.channel.member_count, 3);
    assert_eq!(body["channel"]["topic"], "x", "custom data stays: {body}");
    assert_eq!(member_ids(&body), ["alice", "bob", "carol"]);

    // A member's own token: `{user_id}` objects as the JS SDK's NewMemberPayload, and removal of another member.
    let r = s
        .update_channel(
            &Auth::user("bob"),
            "messaging",
            "c1",
            json!({ "add_members": [{ "user_id": "dave" }], "hide_history": true }),
        )
        .await;
    assert_eq!(member_ids(r.ok(201)), ["alice", "bob", "carol", "dave"]);
    let r = s
        .update_channel(
            &Auth::user("bob"),
            "messaging",
            "c1",
            json!({ "remove_members": ["carol", "bob"], "message": null }),
        )
        .await;
    assert_eq!(r.ok(201)["channel"]["member_count"], 2);
    assert_eq!(members_of(&s, "c1").await, ["alice", "dave"]);
    // bob left: his token may neither read the channel nor change it any more.
    s.update_channel(
        &Auth::user("bob"),
        "messaging",
        "c1",
        json!({ "add_members": ["bob"] }),
    )
    .await
    .err(403, error_code::NOT_ALLOWED);
}

#[tokio::test]
async fn a_channel_grows_past_a_hundred_members_a_hundred_at_a_time() {
    let s = Server::in_process().await;
    let ids: Vec<String> = (0..250).map(|i| format!("m{i:03}")).collect();
    for chunk in ids.chunks(100) {
        let users: Vec<Value> = chunk.iter().map(|id| json!({ "id": id })).collect();
        s.upsert(&users).await;
    }
    s.create_channel("team", "big", &["m000"], json!({})).await;
    for chunk in ids[1..].chunks(100) {
        s.update_channel(
            &Auth::Server,
            "team",
            "big",
            json!({ "add_members": chunk }),
        )
        .await
        .ok(201);
    }
    let state = s
        .query_channel(
            &Auth::user("m249"),
            None,
            "team",
            Some("big"),
            json!({ "state": true, "members": { "limit": 100, "offset": 200 } }),
        )
        .await;
    let state = state.ok(201);
    assert_eq!(state["channel"]["member_count"], 250);
    assert_eq!(member_ids(state), ids[200..].to_vec());
    assert_eq!(state["membership"]["user_id"], "m249");
}

#[tokio::test]
async fn refused_changes_carry_the_protocols_codes_and_change_nothing() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob", "carol"]).await;
    s.create_channel("messaging", "c1", &["alice"], json!({}))
        .await;
    s.create_channel("livestream", "live", &["alice"], json!({}))
        .await;
    let distinct = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            None,
            json!({ "data": { "members": ["alice", "bob"] } }),
        )
        .await
        .ok(201)["channel"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let cases: Vec<(Auth, &str, &str, Value, u16, i64, &str)> = vec![
        (
            Auth::user("bob"),
            "messaging",
            "c1",
            json!({ "add_members": ["bob"] }),
            403,
            error_code::NOT_ALLOWED,
            "only its members",
        ),
        // Anyone may watch a livestream channel; only its members change who is in it.
        (
            Auth::user("bob"),
            "livestream",
            "live",
            json!({ "add_members": ["bob"] }),
            403,
            error_code::NOT_ALLOWED,
            "only its members",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": ["carol", "nobody"] }),
            400,
            error_code::INPUT,
            "don't exist: nobody",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": hundred_and_one }),
            400,
            error_code::INPUT,
            "over the limit of 100 per request",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": "carol" }),
            400,
            error_code::INPUT,
            "must be an array",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({}),
            400,
            error_code::INPUT,
            "at least one user",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": ["carol"], "data": { "x": 1 } }),
            400,
            error_code::INPUT,
            "data is not supported",
        ),
        (
            Auth::Server,
            "messaging",
            "c1",
            json!({ "add_members": ["carol"], "message": { "text": "hi" } }),
            400,
            error_code::INPUT,
            "message is not supported",
        ),
        (
            Auth::Server,
            "messaging",
            &distinct,
            json!({ "add_members": ["carol"] }),
            400,
            error_code::INPUT,
            "distinct channel",
        ),
        (
            Auth::Server,
            "messaging",
            "nope",
            json!({ "add_members": ["carol"] }),
            404,
            error_code::DOES_NOT_EXIST,
            "does not exist",
        ),
        (
            Auth::Server,
            "chat",
            "c1",
            json!({ "add_members": ["carol"] }),
            400,
            error_code::INPUT,
            "channel type chat does not exist",
        ),
    ];
    for (auth, ctype, id, body, status, code, says) in cases {
        let r = s.update_channel(&auth, ctype, id, body.clone()).await;
        let e = r.err(status, code);
        assert!(
            e.message.starts_with("UpdateChannel failed with error: ") && e.message.contains(says),
            "{body}: {}",
            e.message
        );
    }
    let r = s
        .post("/channels/messaging/c1")
        .auth(&Auth::Server)
        .raw_json("{\"add_members\": [")
        .send()
        .await;
    r.err(400, error_code::INPUT);
    assert_eq!(members_of(&s, "c1").await, ["alice"]);
}

#[tokio::test]
async fn watchers_hear_members_come_and_go_and_follow_the_presence_of_those_who_stay() {
    let s = Server::start().await;
    users(&s, &["alice", "bob", "carol", "dave"]).await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    let mut alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", true).await;
    // dave watches without presence: he hears of members, not of their presence.
    s.update_channel(
        &Auth::Server,
        "messaging",
        "c1",
        json!({ "add_members": ["dave"] }),
    )
    .await
    .ok(201);
    let mut dave = s.connect("dave").await;
    s.watch(&dave, "messaging", "c1", false).await;
    alice.drain(ms(300)).await;

    s.update_channel(
        &Auth::user("bob"),
        "messaging",
        "c1",
        json!({ "add_members": ["carol"] }),
    )
    .await
    .ok(201);
    for ws in [&mut alice, &mut dave] {
        let ev = ws
            .wait_for("member.added carol", WAIT, |v| {
                is_type_of(v, "member.added", "carol")
            })
            .await;
        assert_eq!(ev["cid"], "messaging:c1");
        assert_eq!(ev["channel_type"], "messaging");
        assert_eq!(ev["channel_id"], "c1");
        assert_eq!(ev["member"]["user_id"], "carol");
        assert_eq!(ev["member"]["user"]["online"], false);
        assert_public_user(&ev["member"]["user"], "carol");
        time(&ev["created_at"]);
    }

    // carol is now in alice's audience...
    let carol = s.connect("carol").await;
    alice.wait_presence("carol", true, WAIT).await;
    dave.expect_no_presence("carol", QUIET).await;

    // ...and leaves it with her membership.
    s.update_channel(
        &Auth::Server,
        "messaging",
        "c1",
        json!({ "remove_members": ["carol"] }),
    )
    .await
    .ok(201);
    let ev = alice
        .wait_for("member.removed carol", WAIT, |v| {
            is_type_of(v, event_type::MEMBER_REMOVED, "carol")
        })
        .await;
    assert_eq!(ev["member"]["user_id"], "carol");
    carol.close(1000).await;
    alice.expect_no_presence("carol", QUIET).await;
    // The control: a member who stayed is still followed.
    let _bob = s.connect("bob").await;
    alice.wait_presence("bob", true, WAIT).await;
}

#[tokio::test]
async fn member_changes_survive_a_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::default().db(dir.path().join("presence.db"));
    let mut s = Server::binary(opts.clone()).await;
    users(&s, &["alice", "bob", "carol", "dave", "erin"]).await;
    s.create_channel("messaging", "c1", &["alice", "bob"], json!({}))
        .await;
    s.update_channel(
        &Auth::Server,
        "messaging",
        "c1",
        json!({ "add_members": ["carol", "dave", "erin"] }),
    )
    .await
    .ok(201);
    s.update_channel(
        &Auth::Server,
        "messaging",
        "c1",
        json!({ "remove_members": ["bob", "dave"] }),
    )
    .await
    .ok(201);
    let before = all_channels(&s).await;
    // Answered means committed: a kill -9 right after loses none of it.
    s.kill().await;

    let s = Server::binary(opts).await;
    let after = all_channels(&s).await;
    assert_eq!(after, before);
    assert_eq!(after[0]["members"], json!(["alice", "carol", "erin"]));
    assert_eq!(after[0]["channel"]["member_count"], 3);
    // The member index is rebuilt from storage: a watcher follows erin, added before the restart, and not bob.
    let mut alice = s.connect("alice").await;
    s.watch(&alice, "messaging", "c1", true).await;
    let _erin = s.connect("erin").await;
    alice.wait_presence("erin", true, WAIT).await;
    let _bob = s.connect("bob").await;
    alice.expect_no_presence("bob", QUIET).await;
}

#[tokio::test]
async fn in_a_cluster_a_change_made_on_one_node_reaches_the_watchers_of_another() {
    let redis = common::redis::Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    let b = Server::start_with(redis.node("b")).await;
    users(&a, &["alice", "bob", "carol"]).await;
    a.create_channel("messaging", "c1", &["alice"], json!({}))
        .await;
    let mut alice = b.connect("alice").await;
    b.watch(&alice, "messaging", "c1", true).await;

    // Refused on the node it reached: nothing goes into the log every node reads.
    let entries = redis.xlen("presence:log").await;
    a.update_channel(
        &Auth::user("bob"),
        "messaging",
        "c1",
        json!({ "add_members": ["bob"] }),
    )
    .await
    .err(403, error_code::NOT_ALLOWED);
    assert_eq!(redis.xlen("presence:log").await, entries);

    a.update_channel(
        &Auth::user("alice"),
        "messaging",
        "c1",
        json!({ "add_members": ["carol"] }),
    )
    .await
    .ok(201);
    alice
        .wait_for("member.added carol", WAIT, |v| {
            is_type_of(v, event_type::MEMBER_ADDED, "carol")
        })
        .await;
    let _carol = a.connect("carol").await;
    alice.wait_presence("carol", true, WAIT).await;
    assert_eq!(members_of(&b, "c1").await, ["alice", "carol"]);
}

#[tokio::test]
async fn a_users_member_changes_draw_on_its_write_pace_and_a_server_tokens_do_not() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--user-writes-per-minute", 1)
            .arg("--user-write-burst", 2),
    )
    .await;
    users(&s, &["alice", "bob", "carol"]).await;
    s.create_channel("messaging", "c1", &["alice"], json!({}))
        .await;
    let change = |who: &'static str, body: Value| {
        let who = if who == "server" {
            Auth::Server
        } else {
            Auth::user(who)
        };
        let s = &s;
        async move { s.update_channel(&who, "messaging", "c1", body).await }
    };
    let r = change("alice", json!({ "add_members": ["bob"] })).await;
    r.ok(201);
    assert_eq!(r.header("x-ratelimit-remaining").as_deref(), Some("1"));
    change("alice", json!({ "remove_members": ["bob"] }))
        .await
        .ok(201);
    let r = change("alice", json!({ "add_members": ["carol"] })).await;
    r.err(429, error_code::RATE_LIMIT);
    assert!(r.header("retry-after").is_some());
    for _ in 0..5 {
        change("server", json!({ "add_members": ["carol"] }))
            .await
            .ok(201);
    }
    assert_eq!(members_of(&s, "c1").await, ["alice", "carol"]);
}
