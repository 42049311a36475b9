//! Sorting on a field that nothing has: a built-in field always sorts, a custom field sorts while some record has
//! it, and any other name (a misspelt `last_active`, a field unset from its last record) is refused with 400 /
//! code 4 naming it, on queryUsers and queryChannels alike, and after a restart too.

mod common;

use common::*;
use presence_protocol::codes::error_code;
use serde_json::{json, Value};

fn by(field: &str, direction: i64) -> Value {
    json!([{ "field": field, "direction": direction }])
}

async fn users_sorted(s: &Server, sort: Value) -> Resp {
    s.query_users(
        &Auth::user("ann"),
        None,
        json!({ "filter_conditions": {}, "sort": sort }),
    )
    .await
}

async fn channels_sorted(s: &Server, sort: Value) -> Resp {
    s.query_channels(
        &Auth::Server,
        None,
        json!({ "filter_conditions": {}, "sort": sort }),
    )
    .await
}

fn assert_unknown(r: &Resp, op: &str, field: &str) {
    let err = r.err(400, error_code::INPUT);
    assert!(
        err.message.starts_with(&format!("{op} failed")) && err.message.contains(field),
        "{}: the refusal should name the operation and the field {field}: {}",
        r.desc,
        err.message
    );
}

fn channel_cids(r: &Resp) -> Vec<String> {
    r.ok(201)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"]["cid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_user_sort_on_a_field_nobody_has_is_refused() {
    let s = Server::start_with(ServerOpts::default()).await;
    s.upsert(&[
        json!({ "id": "ann", "mood": 2 }),
        json!({ "id": "bob", "mood": 1 }),
        json!({ "id": "cat" }),
    ])
    .await;

    // Built-in fields sort whether or not anyone set them (nobody has `username` here).
    for field in [
        "last_active",
        "id",
        "created_at",
        "online",
        "name",
        "username",
    ] {
        users_sorted(&s, by(field, -1)).await.ok(200);
    }
    // A custom field some user has sorts by it.
    let r = users_sorted(&s, by("mood", 1)).await;
    assert_eq!(ids(&r.ok(200)["users"]), strs(&["bob", "ann", "cat"]));

    // A misspelt built-in, a name nobody has, one of several keys.
    for sort in [
        by("last_activ", -1),
        by("moood", 1),
        json!([{ "field": "id", "direction": 1 }, { "field": "colour", "direction": 1 }]),
    ] {
        let field = sort.as_array().unwrap().last().unwrap()["field"]
            .as_str()
            .unwrap()
            .to_string();
        assert_unknown(&users_sorted(&s, sort).await, "QueryUsers", &field);
    }

    // Once the last user with `mood` drops it, `mood` is a name nobody has; setting it again brings it back.
    s.partial_update(&Auth::Server, "ann", json!({}), &["mood"])
        .await
        .ok(200);
    users_sorted(&s, by("mood", 1)).await.ok(200);
    s.upsert(&[json!({ "id": "bob" })]).await;
    assert_unknown(&users_sorted(&s, by("mood", 1)).await, "QueryUsers", "mood");
    s.partial_update(&Auth::Server, "cat", json!({ "mood": 5 }), &[])
        .await
        .ok(200);
    users_sorted(&s, by("mood", 1)).await.ok(200);

    // A field set only through connect's user details counts too.
    let _dan = s
        .connect_with("dan", json!({ "id": "dan", "shoe_size": 44 }))
        .await;
    users_sorted(&s, by("shoe_size", 1)).await.ok(200);
}

#[tokio::test]
async fn a_channel_sort_on_a_field_no_channel_has_is_refused() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    s.create_channel("messaging", "c1", &["ann"], json!({ "rank": 2 }))
        .await;
    s.create_channel("messaging", "c2", &["ann"], json!({ "rank": 1 }))
        .await;

    for field in [
        "last_message_at",
        "member_count",
        "created_at",
        "cid",
        "pinned_at",
    ] {
        channels_sorted(&s, by(field, -1)).await.ok(201);
    }
    let r = channels_sorted(&s, by("rank", 1)).await;
    assert_eq!(channel_cids(&r), strs(&["messaging:c2", "messaging:c1"]));
    for field in ["last_mesage_at", "priority"] {
        assert_unknown(
            &channels_sorted(&s, by(field, -1)).await,
            "QueryChannels",
            field,
        );
    }
    // A user's custom field is not a channel's.
    s.upsert(&[json!({ "id": "ann", "priority": 1 })]).await;
    assert_unknown(
        &channels_sorted(&s, by("priority", -1)).await,
        "QueryChannels",
        "priority",
    );
}

#[tokio::test]
async fn custom_fields_stored_before_a_restart_still_sort() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::default().db(dir.path().join("presence.db"));
    let mut s = Server::binary(opts.clone()).await;
    s.upsert(&[json!({ "id": "ann", "mood": 1 })]).await;
    s.create_channel("messaging", "c1", &["ann"], json!({ "rank": 1 }))
        .await;
    s.terminate().await;

    let s = Server::binary(opts).await;
    users_sorted(&s, by("mood", 1)).await.ok(200);
    channels_sorted(&s, by("rank", 1)).await.ok(201);
    assert_unknown(&users_sorted(&s, by("rank", 1)).await, "QueryUsers", "rank");
}
