//! Input limits (protocol section 10): each is checked at its edge — just under passes, just over is refused with
//! 400 / code 4 and a message naming the limit — and nothing refused is half applied.

mod common;

use common::*;
use presence_protocol::codes::{close_code, error_code};
use serde_json::{json, Value};

/// The cap on a user's or a channel's custom data, serialized.
const CAP: usize = 5 * 1024;

/// `fields` plus a `pad` string making the whole object exactly `total` bytes of JSON.
fn padded(mut fields: Value, total: usize) -> Value {
    fields["pad"] = json!("");
    let n = total - fields.to_string().len();
    fields["pad"] = json!("x".repeat(n));
    assert_eq!(fields.to_string().len(), total);
    fields
}

/// `data` with `key` set to `value`.
fn with(mut data: Value, key: &str, value: Value) -> Value {
    data[key] = value;
    data
}

/// Asserts a 400 / code 4 refusal whose message contains `words`.
fn assert_limit(r: &Resp, words: &str) {
    let err = r.err(400, error_code::INPUT);
    assert!(
        err.message.contains(words),
        "{}: message should name the limit ({words}): {}",
        r.desc,
        err.message
    );
}

/// `POST /channels/messaging/{id}/query` (the distinct-channel path without `id`) as `user`, with `members`.
async fn create_as(s: &Server, user: &str, id: Option<&str>, members: Value) -> Resp {
    s.query_channel(
        &Auth::user(user),
        None,
        "messaging",
        id,
        json!({ "data": { "members": members } }),
    )
    .await
}

#[tokio::test]
async fn user_custom_data_is_capped_at_5_kb_on_upsert() {
    let s = Server::in_process().await;
    for auth in [Auth::Server, Auth::user("ann")] {
        let fits = padded(json!({ "name": "Ann", "status": "here" }), CAP);
        s.upsert_as(&auth, &[with(fits.clone(), "id", json!("ann"))])
            .await
            .ok(201);
        let over = padded(json!({ "name": "Ann", "status": "gone" }), CAP + 1);
        let r = s.upsert_as(&auth, &[with(over, "id", json!("ann"))]).await;
        assert_limit(&r, "5 KB");
        // The refused write changed nothing.
        let ann = s.user_as(&Auth::Server, "ann").await;
        assert_eq!(ann["status"], "here");
        assert_eq!(ann["pad"], fits["pad"]);
    }
}

#[tokio::test]
async fn user_custom_data_is_capped_at_5_kb_after_a_partial_update() {
    let s = Server::in_process().await;
    let stored = padded(json!({ "name": "Ann" }), CAP - 100);
    s.upsert(&[with(stored.clone(), "id", json!("ann"))]).await;
    let ann = Auth::user("ann");
    // What the data would be after the update decides, not the update alone.
    let extra = |result_len: usize, base: &Value| {
        let mut after = base.clone();
        after["more"] = json!("");
        json!("y".repeat(result_len - after.to_string().len()))
    };
    let r = s
        .partial_update(&ann, "ann", json!({ "more": extra(CAP + 1, &stored) }), &[])
        .await;
    assert_limit(&r, "5 KB");
    // Unsetting `pad` in the same update makes room: the result is exactly at the cap.
    let without_pad = json!({ "name": "Ann" });
    let more = extra(CAP, &without_pad);
    assert!(
        more.as_str().unwrap().len() > 200,
        "the set alone would not fit beside pad"
    );
    s.partial_update(&ann, "ann", json!({ "more": more }), &["pad"])
        .await
        .ok(200);
    assert_eq!(s.user_as(&Auth::Server, "ann").await["more"], more);

    // One user named twice in one request (each update fitting alone, both together not) is refused as such,
    // and neither applies.
    s.upsert(&[json!({ "id": "bo" })]).await;
    let half = "z".repeat(CAP / 2);
    let r = s
        .patch("/users")
        .auth(&Auth::Server)
        .json(json!({ "users": [
            { "id": "bo", "set": { "a": half } },
            { "id": "bo", "set": { "b": half } },
        ] }))
        .send()
        .await;
    assert_limit(&r, "more than once");
    assert!(s.user_as(&Auth::Server, "bo").await.get("a").is_none());
}

#[tokio::test]
async fn user_details_on_connect_are_capped_at_5_kb() {
    let s = Server::start().await;
    // Exactly at the cap connects (`id` is not stored data).
    let fits = padded(json!({ "name": "Ann" }), CAP);
    let ws = s
        .connect_with("ann", with(fits.clone(), "id", json!("ann")))
        .await;
    assert_eq!(ws.me()["pad"], fits["pad"]);
    // One byte more is refused with the connect path's error frame, and the user is not created.
    let over = padded(json!({ "name": "Bo" }), CAP + 1);
    let (frame, mut refused) = s
        .refused_connect("bo", &with(over, "id", json!("bo")))
        .await;
    assert_eq!(frame["error"]["code"], error_code::INPUT, "{frame}");
    assert_eq!(frame["error"]["StatusCode"], 400, "{frame}");
    let message = frame["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("5 KB"), "{frame}");
    assert_eq!(
        refused.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::NORMAL))
    );
    assert!(s.user_ids(json!({ "id": "bo" })).await.is_empty());
}

#[tokio::test]
async fn channel_custom_data_is_capped_at_5_kb() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    // The member list is an input, not custom data: only the rest counts.
    let fits = padded(json!({ "name": "Room" }), CAP);
    let body = s
        .create_channel("messaging", "fits", &["ann"], fits.clone())
        .await;
    assert_eq!(body["channel"]["pad"], fits["pad"]);
    let over = padded(json!({ "name": "Room" }), CAP + 1);
    let r = s
        .query_channel(
            &Auth::user("ann"),
            None,
            "messaging",
            Some("over"),
            json!({ "data": with(over, "members", json!(["ann"])) }),
        )
        .await;
    assert_limit(&r, "5 KB");
    let r = s
        .query_channels(&Auth::Server, None, json!({ "filter_conditions": {} }))
        .await;
    assert_eq!(cids(r.ok(201)), strs(&["messaging:fits"]));
}

#[tokio::test]
async fn a_channel_request_names_at_most_100_members() {
    let s = Server::in_process().await;
    let ids: Vec<String> = (0..101).map(|i| format!("m{i:03}")).collect();
    for batch in ids.chunks(100) {
        let users: Vec<Value> = batch.iter().map(|id| json!({ "id": id })).collect();
        s.upsert(&users).await;
    }
    let create = |id: Option<&'static str>, members: Value| create_as(&s, "m000", id, members);
    let body = create(Some("hundred"), json!(ids[..100])).await;
    assert_eq!(body.ok(201)["channel"]["member_count"], 100);
    assert_limit(&create(Some("more"), json!(ids)).await, "limit of 100");
    assert_limit(&create(None, json!(ids)).await, "limit of 100");
    // A huge list is refused by its length (before any de-duplication or lookup).
    let huge: Vec<String> = (0..100_000).map(|i| format!("u{i}")).collect();
    assert_limit(&create(Some("huge"), json!(huge)).await, "limit of 100");
    // Repeats count towards the 100 but are stored once.
    let repeated: Vec<&String> = ids[..50].iter().chain(&ids[..50]).collect();
    let body = create(Some("repeats"), json!(repeated)).await;
    assert_eq!(body.ok(201)["channel"]["member_count"], 50);
}

#[tokio::test]
async fn in_and_nin_take_at_most_1000_values() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "v5" })]).await;
    s.create_channel("messaging", "v5", &["v5"], json!({}))
        .await;
    let values = |n: usize| -> Vec<String> { (0..n).map(|i| format!("v{i}")).collect() };
    for op in ["$in", "$nin"] {
        let users = |n: usize| {
            let s = &s;
            async move {
                s.query_users(
                    &Auth::Server,
                    None,
                    json!({ "filter_conditions": { "id": { op: values(n) } } }),
                )
                .await
            }
        };
        let r = users(1000).await;
        let want: &[&str] = if op == "$in" { &["v5"] } else { &[] };
        assert_eq!(ids(&r.ok(200)["users"]), strs(want), "{op}");
        assert_limit(&users(1001).await, "1000");

        let channels = |n: usize| {
            let s = &s;
            async move {
                let cids: Vec<String> =
                    values(n).iter().map(|v| format!("messaging:{v}")).collect();
                s.query_channels(
                    &Auth::Server,
                    None,
                    json!({ "filter_conditions": { "cid": { op: cids } } }),
                )
                .await
            }
        };
        channels(1000).await.ok(201);
        assert_limit(&channels(1001).await, "1000");
    }
}

/// A filter with `depth` nested logical operators `op` around `{"id": "ann"}`.
fn nested(op: &str, depth: usize) -> Value {
    let mut filter = json!({ "id": "ann" });
    for _ in 0..depth {
        filter = match op {
            "$or" => json!({ op: [filter, { "id": "nobody" }] }),
            _ => json!({ op: [filter] }),
        };
    }
    filter
}

#[tokio::test]
async fn filters_nest_at_most_10_levels() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    s.create_channel("messaging", "c1", &["ann"], json!({}))
        .await;
    for op in ["$and", "$or", "$nor"] {
        let users = |depth: usize| {
            let s = &s;
            async move {
                s.query_users(
                    &Auth::Server,
                    None,
                    json!({ "filter_conditions": nested(op, depth) }),
                )
                .await
            }
        };
        users(10).await.ok(200);
        assert_limit(&users(11).await, "10 levels");
        let channels = |depth: usize| {
            let s = &s;
            async move {
                s.query_channels(
                    &Auth::Server,
                    None,
                    json!({ "filter_conditions": nested(op, depth) }),
                )
                .await
            }
        };
        channels(10).await.ok(201);
        assert_limit(&channels(11).await, "10 levels");
    }
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    // Past serde_json's nesting limit (128) in a body and in the queryUsers payload: an input error, no crash.
    for depth in [200, 50_000] {
        let body = format!(
            "{{\"filter_conditions\":{}{{}}{}}}",
            "{\"$and\":[".repeat(depth),
            "]}".repeat(depth)
        );
        let r = s
            .post("/channels")
            .auth(&Auth::Server)
            .raw_json(body)
            .send()
            .await;
        r.err(400, error_code::INPUT);
    }
    let payload = format!(
        "{{\"filter_conditions\":{}{{}}{}}}",
        "{\"$or\":[".repeat(200),
        "]}".repeat(200)
    );
    let r = s
        .get("/users")
        .auth(&Auth::Server)
        .query("payload", &payload)
        .send()
        .await;
    r.err(400, error_code::INPUT);
    assert_eq!(s.user_ids(json!({ "id": "ann" })).await, strs(&["ann"]));
}

#[tokio::test]
async fn query_users_pages_are_capped_and_must_be_non_negative_integers() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    let query = |extra: Value| {
        let s = &s;
        async move {
            let mut payload = json!({ "filter_conditions": {} });
            for (k, v) in extra.as_object().unwrap() {
                payload[k] = v.clone();
            }
            s.query_users(&Auth::Server, None, payload).await
        }
    };
    query(json!({ "limit": 100, "offset": 1000 })).await.ok(200);
    assert_limit(&query(json!({ "limit": 101 })).await, "limit");
    assert_limit(&query(json!({ "offset": 1001 })).await, "offset");
    for bad in [json!(-1), json!(1.5), json!("10"), json!([10])] {
        assert_limit(&query(json!({ "limit": bad })).await, "limit");
        assert_limit(&query(json!({ "offset": bad })).await, "offset");
    }
}

#[tokio::test]
async fn query_channels_pages_are_capped_and_must_be_non_negative_integers() {
    let s = Server::in_process().await;
    let query = |extra: Value| {
        let s = &s;
        async move {
            let mut body = json!({ "filter_conditions": {} });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            s.query_channels(&Auth::Server, None, body).await
        }
    };
    query(json!({ "limit": 30, "offset": 1000, "member_limit": 100 }))
        .await
        .ok(201);
    assert_limit(&query(json!({ "limit": 31 })).await, "limit");
    assert_limit(&query(json!({ "offset": 1001 })).await, "offset");
    assert_limit(&query(json!({ "member_limit": 101 })).await, "member_limit");
    for bad in [json!(-1), json!(2.5), json!("10"), json!({})] {
        for field in ["limit", "offset", "member_limit"] {
            assert_limit(&query(json!({ field: bad })).await, field);
        }
    }
}

#[tokio::test]
async fn a_user_token_creates_at_most_the_configured_number_of_channels() {
    let s = Server::in_process_with(ServerOpts::default().max_channels_per_user(3)).await;
    s.upsert(&[json!({ "id": "ann" }), json!({ "id": "bo" })])
        .await;
    let create = |user: &'static str, id: Option<&'static str>, members: Value| {
        create_as(&s, user, id, members)
    };
    create("ann", Some("a1"), json!(["ann"])).await.ok(201);
    create("ann", Some("a2"), json!(["ann", "bo"]))
        .await
        .ok(201);
    // A distinct channel counts like any other.
    create("ann", None, json!(["ann", "bo"])).await.ok(201);
    let r = create("ann", Some("a4"), json!(["ann"])).await;
    assert_limit(&r, "channels per user is 3");
    // Getting a channel that exists creates nothing and is not counted; others and server tokens are not limited.
    create("ann", Some("a1"), json!(["ann"])).await.ok(201);
    create("bo", Some("b1"), json!(["bo"])).await.ok(201);
    s.create_channel("messaging", "s1", &["ann"], json!({}))
        .await;
    let r = s
        .query_channels(
            &Auth::Server,
            None,
            json!({ "filter_conditions": { "cid": "messaging:a4" } }),
        )
        .await;
    assert!(cids(r.ok(201)).is_empty(), "{}", r.text);
}

#[tokio::test]
async fn the_channel_cap_counts_channels_created_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    {
        let s =
            Server::in_process_with(ServerOpts::default().db(&db).max_channels_per_user(2)).await;
        s.upsert(&[json!({ "id": "ann" })]).await;
        for id in ["a1", "a2"] {
            create_as(&s, "ann", Some(id), json!(["ann"])).await.ok(201);
        }
    }
    let s = Server::in_process_with(ServerOpts::default().db(&db).max_channels_per_user(2)).await;
    let r = create_as(&s, "ann", Some("a3"), json!(["ann"])).await;
    assert_limit(&r, "channels per user is 2");
    drop(s);
    let s = Server::in_process_with(ServerOpts::default().db(&db).max_channels_per_user(3)).await;
    create_as(&s, "ann", Some("a3"), json!(["ann"]))
        .await
        .ok(201);
}

#[tokio::test]
async fn the_channel_cap_is_set_by_its_environment_variable() {
    let s =
        Server::start_with(ServerOpts::default().env("PRESENCE_MAX_CHANNELS_PER_USER", "1")).await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    let create = |id: &'static str| create_as(&s, "ann", Some(id), json!(["ann"]));
    create("a1").await.ok(201);
    assert_limit(&create("a2").await, "channels per user is 1");
}
