//! Distinct channels (created by their member set, without an id) belong to exactly that member set: nobody can
//! create a channel under a distinct id, a distinct lookup never returns a channel holding other members, and the
//! ids are keyed with the API secret, so nobody can compute the id of someone else's conversation in advance.

mod common;

use common::*;
use presence_protocol::codes::error_code;
use serde_json::{json, Value};

/// The id a distinct channel of `members` had before ids were keyed (and what anyone could compute): FNV-1a over
/// the sorted ids joined by NUL.
fn unkeyed_distinct_id(members: &[&str]) -> String {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted.join("\u{0}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("!members-{hash:016x}")
}

async fn setup(s: &Server) {
    s.upsert(&[
        json!({ "id": "alice" }),
        json!({ "id": "bob" }),
        json!({ "id": "mallory" }),
    ])
    .await;
}

/// `channel('messaging', {members}).watch()` as `user`: the distinct-channel path, no id.
async fn open_distinct(s: &Server, user: &str, members: &[&str]) -> Resp {
    s.query_channel(
        &Auth::user(user),
        None,
        "messaging",
        None,
        json!({ "data": { "members": members }, "state": true }),
    )
    .await
}

/// The cids of every channel, sorted.
async fn all_cids(s: &Server) -> Vec<String> {
    cids(&json!({ "channels": all_channels(s).await }))
}

fn member_ids(state: &Value) -> Vec<String> {
    let mut ids: Vec<String> = state["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn creating_a_channel_under_a_distinct_id_is_refused() {
    let s = Server::in_process().await;
    setup(&s).await;
    let squat = unkeyed_distinct_id(&["alice", "bob"]);
    // Mallory alone in it (Alice and Bob locked out), or with them (Mallory listening in): both refused.
    for members in [json!(["mallory"]), json!(["alice", "bob", "mallory"])] {
        let r = s
            .query_channel(
                &Auth::user("mallory"),
                None,
                "messaging",
                Some(&squat),
                json!({ "data": { "members": members }, "watch": true, "presence": true }),
            )
            .await;
        let err = r.err(400, error_code::INPUT);
        assert!(err.message.contains("!members-"), "{}", err.message);
    }
    // Not even a server token creates one, and a query by such an id creates nothing.
    let r = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            Some("!members-0123456789abcdef"),
            json!({ "data": { "members": ["mallory"] } }),
        )
        .await;
    r.err(400, error_code::INPUT);
    assert!(all_cids(&s).await.is_empty());

    // Alice's distinct channel with Bob is theirs alone, and she can come back to it by its id.
    let state = open_distinct(&s, "alice", &["alice", "bob"])
        .await
        .ok(201)
        .clone();
    assert_eq!(member_ids(&state), ["alice", "bob"]);
    let id = state["channel"]["id"].as_str().unwrap().to_string();
    for user in ["alice", "bob"] {
        let again = s
            .query_channel(
                &Auth::user(user),
                None,
                "messaging",
                Some(&id),
                json!({ "state": true, "watch": true, "presence": true }),
            )
            .await;
        assert_eq!(again.ok(201)["channel"]["cid"], state["channel"]["cid"]);
    }
    let r = s
        .query_channel(
            &Auth::user("mallory"),
            None,
            "messaging",
            Some(&id),
            json!({ "state": true, "watch": true, "presence": true }),
        )
        .await;
    r.err(403, error_code::NOT_ALLOWED);
}

/// A database as an earlier version left it: `messaging:{id}` holding `members`, stored under a distinct id
/// that a client picked (or the server derived without a key).
async fn database_with_channel(db: &std::path::Path, id: &str, members: &[&str]) {
    {
        let s = Server::in_process_with(ServerOpts::default().db(db)).await;
        setup(&s).await;
        s.create_channel("messaging", "placeholder", members, json!({}))
            .await;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let cid = format!("messaging:{id}");
    conn.execute(
        "UPDATE channels SET cid = ?1, id = ?2 WHERE cid = 'messaging:placeholder'",
        (&cid, id),
    )
    .unwrap();
    conn.execute(
        "UPDATE members SET cid = ?1 WHERE cid = 'messaging:placeholder'",
        [&cid],
    )
    .unwrap();
}

#[tokio::test]
async fn a_distinct_lookup_never_returns_a_channel_holding_other_members() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let squat = unkeyed_distinct_id(&["alice", "bob"]);
    database_with_channel(&db, &squat, &["alice", "bob", "mallory"]).await;
    let s = Server::in_process_with(ServerOpts::default().db(&db)).await;

    let state = open_distinct(&s, "alice", &["bob", "alice"])
        .await
        .ok(201)
        .clone();
    assert_eq!(member_ids(&state), ["alice", "bob"], "{state}");
    assert_ne!(state["channel"]["id"], squat.as_str());
    // Mallory's channel is still there, apart from theirs.
    assert_eq!(
        all_cids(&s).await,
        sorted(vec![
            format!("messaging:{squat}"),
            state["channel"]["cid"].as_str().unwrap().to_string()
        ])
    );
}

#[tokio::test]
async fn a_distinct_channel_stored_under_its_unkeyed_id_is_still_found_by_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let legacy = unkeyed_distinct_id(&["alice", "bob"]);
    database_with_channel(&db, &legacy, &["alice", "bob"]).await;
    let s = Server::in_process_with(ServerOpts::default().db(&db)).await;

    let state = open_distinct(&s, "bob", &["alice", "bob"])
        .await
        .ok(201)
        .clone();
    assert_eq!(state["channel"]["id"], legacy.as_str());
    assert_eq!(all_cids(&s).await.len(), 1);
}

#[tokio::test]
async fn distinct_ids_are_keyed_with_the_api_secret() {
    let secret_a = "a-secret-of-at-least-thirty-two-bytes-aaaa";
    let secret_b = "a-secret-of-at-least-thirty-two-bytes-bbbb";
    let mut ids = Vec::new();
    for secret in [secret_a, secret_b, secret_a] {
        let s = Server::in_process_with(ServerOpts::default().api_secret(secret)).await;
        setup(&s).await;
        let state = open_distinct(&s, "alice", &["alice", "bob"])
            .await
            .ok(201)
            .clone();
        let id = state["channel"]["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("!members-") && id.len() <= 64, "{id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "different secrets give different ids");
    assert_eq!(ids[0], ids[2], "the same secret gives the same id");
    assert_ne!(ids[0], unkeyed_distinct_id(&["alice", "bob"]));
}
