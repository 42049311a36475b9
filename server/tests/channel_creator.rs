//! Who created a channel: the creator a server token names on create (`data.created_by: {id}` or
//! `data.created_by_id`, as Stream's server SDKs send them), the caller for user tokens, and how that meets the
//! per-user channel cap.

mod common;

use common::*;
use presence_protocol::codes::error_code;
use serde_json::{json, Value};

async fn users(s: &Server, ids: &[&str]) {
    let list: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    s.upsert(&list).await;
}

async fn create(s: &Server, auth: &Auth, id: Option<&str>, data: Value) -> Resp {
    s.query_channel(auth, None, "messaging", id, json!({ "data": data }))
        .await
}

async fn channel_count(s: &Server) -> usize {
    let r = s
        .query_channels(&Auth::Server, None, json!({ "filter_conditions": {} }))
        .await;
    cids(r.ok(201)).len()
}

#[tokio::test]
async fn a_server_token_names_the_creator_on_create() {
    let s = Server::in_process().await;
    users(&s, &["owner", "member"]).await;
    // The Python SDK's `channel.create("owner")`.
    let r = create(
        &s,
        &Auth::Server,
        Some("room"),
        json!({ "name": "Room", "members": ["owner", "member"], "created_by": { "id": "owner" } }),
    )
    .await;
    let body = r.ok(201);
    assert_eq!(body["channel"]["created_by"]["id"], "owner", "{body}");
    assert_public_user(&body["channel"]["created_by"], "owner");
    assert_eq!(body["channel"]["name"], "Room");
    // Read back later, by the creator and by a server token: the same creator, never as custom data.
    for auth in [Auth::Server, Auth::user("owner"), Auth::user("member")] {
        let r = create(&s, &auth, Some("room"), json!({})).await;
        assert_eq!(
            r.ok(201)["channel"]["created_by"]["id"],
            "owner",
            "{}",
            r.text
        );
    }
    let r = s
        .query_channels(
            &Auth::Server,
            None,
            json!({ "filter_conditions": { "created_by_id": "owner" } }),
        )
        .await;
    assert_eq!(cids(r.ok(201)), vec!["messaging:room"], "{}", r.text);

    // `created_by_id` names it too, and a distinct channel (no id) records its creator the same way.
    let r = create(
        &s,
        &Auth::Server,
        Some("by-id"),
        json!({ "members": ["member"], "created_by_id": "owner" }),
    )
    .await;
    assert_eq!(
        r.ok(201)["channel"]["created_by"]["id"],
        "owner",
        "{}",
        r.text
    );
    let r = create(
        &s,
        &Auth::Server,
        None,
        json!({ "members": ["owner", "member"], "created_by": { "id": "member" } }),
    )
    .await;
    let body = r.ok(201);
    assert!(
        body["channel"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("!members-")),
        "{body}"
    );
    assert_eq!(body["channel"]["created_by"]["id"], "member", "{body}");
    // Asking again with the other order of members (and the creator still in `data`) finds the same channel.
    let again = create(
        &s,
        &Auth::Server,
        None,
        json!({ "members": ["member", "owner"], "created_by": { "id": "member" } }),
    )
    .await;
    assert_eq!(again.ok(201)["channel"]["id"], body["channel"]["id"]);
}

#[tokio::test]
async fn a_named_creator_must_be_a_user_that_exists_and_one_user() {
    let s = Server::in_process().await;
    users(&s, &["owner", "member"]).await;
    let refused = [
        json!({ "members": ["member"], "created_by": { "id": "ghost" } }),
        json!({ "members": ["member"], "created_by_id": "ghost" }),
    ];
    for data in refused {
        let err = create(&s, &Auth::Server, Some("c"), data)
            .await
            .err(400, error_code::INPUT);
        assert!(err.message.contains("ghost"), "{}", err.message);
    }
    let malformed = [
        json!({ "members": ["member"], "created_by": "owner" }),
        json!({ "members": ["member"], "created_by": { "name": "owner" } }),
        json!({ "members": ["member"], "created_by_id": 7 }),
        json!({ "members": ["member"], "created_by": { "id": "owner" }, "created_by_id": "member" }),
    ];
    for data in malformed {
        let err = create(&s, &Auth::Server, Some("c"), data.clone())
            .await
            .err(400, error_code::INPUT);
        assert!(
            err.message.contains("data.created_by"),
            "{data}: {}",
            err.message
        );
    }
    assert_eq!(channel_count(&s).await, 0);
}

#[tokio::test]
async fn a_user_token_creates_as_itself_only() {
    let s = Server::in_process().await;
    users(&s, &["alice", "bob"]).await;
    for (i, data) in [
        json!({ "members": ["alice", "bob"], "created_by": { "id": "bob" } }),
        json!({ "members": ["alice", "bob"], "created_by_id": "bob" }),
    ]
    .into_iter()
    .enumerate()
    {
        let err = create(&s, &Auth::user("alice"), Some(&format!("c{i}")), data)
            .await
            .err(400, error_code::INPUT);
        assert!(
            err.message.contains("data.created_by") && err.message.contains("bob"),
            "{}",
            err.message
        );
    }
    assert_eq!(channel_count(&s).await, 0);
    // Naming itself is what the creator would be anyway.
    let r = create(
        &s,
        &Auth::user("alice"),
        Some("mine"),
        json!({ "members": ["alice", "bob"], "created_by": { "id": "alice" }, "created_by_id": "alice" }),
    )
    .await;
    let body = r.ok(201);
    assert_eq!(body["channel"]["created_by"]["id"], "alice", "{body}");
}

#[tokio::test]
async fn a_server_token_naming_a_creator_is_not_held_to_the_per_user_cap() {
    let s = Server::in_process_with(ServerOpts::default().max_channels_per_user(1)).await;
    users(&s, &["alice"]).await;
    for id in ["a1", "a2"] {
        let r = create(
            &s,
            &Auth::Server,
            Some(id),
            json!({ "members": ["alice"], "created_by": { "id": "alice" } }),
        )
        .await;
        assert_eq!(r.ok(201)["channel"]["created_by"]["id"], "alice");
    }
    // The channels recorded as alice's count towards her own cap, as they do when read back from storage.
    let err = create(
        &s,
        &Auth::user("alice"),
        Some("a3"),
        json!({ "members": ["alice"] }),
    )
    .await
    .err(400, error_code::INPUT);
    assert!(err.message.contains("limit"), "{}", err.message);
}
