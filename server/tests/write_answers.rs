//! The users a write answers with (`POST /users`, `PATCH /users`) read exactly as the same caller's `queryUsers`
//! reads them: a server token sees every user as others do, a user writing itself sees its own view.

mod common;

use common::*;
use serde_json::{json, Value};

/// The answers a server token gets from an upsert and a partial update of `id`.
async fn server_write_answers(s: &Server, id: &str) -> Vec<Value> {
    let upserted = s.upsert(&[json!({ "id": id, "name": "Name" })]).await;
    let patched = s
        .partial_update(&Auth::Server, id, json!({ "status": "away" }), &[])
        .await;
    vec![
        upserted["users"][id].clone(),
        patched.ok(200)["users"][id].clone(),
    ]
}

#[tokio::test]
async fn a_server_token_reads_an_invisible_user_as_offline_in_write_answers() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "ghost" })]).await;
    let _ws = s.connect_with("ghost", json!({ "invisible": true })).await;
    let queried = s.user_as(&Auth::Server, "ghost").await;
    assert_eq!(queried["online"], false, "{queried}");
    for answer in server_write_answers(&s, "ghost").await {
        assert_public_user(&answer, "ghost");
        assert_eq!(answer["online"], false, "{answer}");
        assert_eq!(answer["last_active"], queried["last_active"], "{answer}");
        assert!(answer.get("privacy_settings").is_none(), "{answer}");
    }
}

#[tokio::test]
async fn a_server_token_sees_no_own_only_fields_of_a_visible_user() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    let _ws = s.connect("ann").await;
    s.partial_update(
        &Auth::Server,
        "ann",
        json!({ "privacy_settings": { "typing_indicators": { "enabled": false } } }),
        &[],
    )
    .await
    .ok(200);
    for answer in server_write_answers(&s, "ann").await {
        assert_public_user(&answer, "ann");
        assert_eq!(answer["online"], true, "{answer}");
        assert!(answer.get("privacy_settings").is_none(), "{answer}");
    }
}

#[tokio::test]
async fn a_user_writing_itself_reads_its_own_view() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "ghost" })]).await;
    let _ws = s.connect_with("ghost", json!({ "invisible": true })).await;
    let me = Auth::user("ghost");
    let own = s.user_as(&me, "ghost").await;
    let upserted = s
        .upsert_as(&me, &[json!({ "id": "ghost", "invisible": true })])
        .await;
    let patched = s
        .partial_update(&me, "ghost", json!({ "status": "hidden" }), &[])
        .await;
    for answer in [
        &upserted.ok(201)["users"]["ghost"],
        &patched.ok(200)["users"]["ghost"],
    ] {
        assert_own_user(answer, "ghost");
        assert_eq!(answer["invisible"], true, "{answer}");
        assert_eq!(answer["online"], own["online"], "{answer} vs {own}");
    }
}
