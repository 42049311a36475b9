//! `POST /users`, `PATCH /users`, `GET /users`: shapes, status codes, upsert/partial semantics, filters, sort,
//! pagination limits.

mod common;

use common::*;
use presence_protocol::codes::error_code;
use presence_protocol::{QueryUsersResponse, UpdateUsersResponse};
use serde_json::{json, Value};

#[tokio::test]
async fn upsert_creates_and_replaces() {
    let s = Server::in_process().await;
    let before = now();
    let r = s
        .upsert_as(
            &Auth::Server,
            &[
                json!({ "id": "bob", "name": "Bob", "favorite": "x", "status": "busy", "image": "http://img/b" }),
                json!({ "id": "carol" }),
            ],
        )
        .await;
    let body = r.ok(201).clone();
    let parsed: UpdateUsersResponse =
        serde_json::from_value(body.clone()).expect("UpdateUsersResponse shape");
    assert_eq!(
        sorted(parsed.users.keys().cloned().collect()),
        strs(&["bob", "carol"])
    );
    let bob = &body["users"]["bob"];
    assert_eq!(bob["id"], "bob");
    assert_eq!(bob["name"], "Bob");
    assert_eq!(bob["image"], "http://img/b");
    assert_eq!(bob["favorite"], "x", "custom fields are flat: {bob}");
    assert_eq!(bob["status"], "busy");
    assert!(
        bob.get("custom").is_none(),
        "custom fields must be flat: {bob}"
    );
    assert_eq!(bob["role"], "user");
    assert_eq!(bob["online"], false);
    assert_eq!(bob["banned"], false);
    assert!(bob["teams"].is_array());
    let created = time(&bob["created_at"]);
    assert!(
        created >= before - chrono::Duration::seconds(2)
            && created <= now() + chrono::Duration::seconds(2),
        "created_at {created} not around now"
    );

    // Full replace: absent custom fields are removed, created_at is kept, updated_at moves forward.
    sleep_ms(20).await;
    let body = s
        .upsert(&[json!({ "id": "bob", "name": "Robert", "color": "red" })])
        .await;
    let bob2 = &body["users"]["bob"];
    assert_eq!(bob2["name"], "Robert");
    assert_eq!(bob2["color"], "red");
    assert!(
        bob2.get("favorite").is_none(),
        "upsert must replace: {bob2}"
    );
    assert!(bob2.get("status").is_none(), "upsert must replace: {bob2}");
    assert!(bob2.get("image").is_none(), "upsert must replace: {bob2}");
    assert_eq!(time(&bob2["created_at"]), created);
    assert!(time(&bob2["updated_at"]) > time(&bob["updated_at"]));

    // And the stored user reflects it.
    let stored = s.user_as(&Auth::Server, "bob").await;
    assert_eq!(stored["name"], "Robert");
    assert_eq!(stored["color"], "red");
    assert!(stored.get("favorite").is_none());
}

#[tokio::test]
async fn partial_update_sets_and_unsets() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "alice", "name": "Alice", "color": "red", "status": "here" })])
        .await;
    let r = s
        .partial_update(
            &Auth::Server,
            "alice",
            json!({ "status": "away", "nested": { "a": [1, 2] } }),
            &["color"],
        )
        .await;
    let body = r.ok(200);
    let alice = &body["users"]["alice"];
    assert_eq!(alice["status"], "away");
    assert_eq!(alice["name"], "Alice", "fields not mentioned are kept");
    assert_eq!(alice["nested"], json!({ "a": [1, 2] }));
    assert!(alice.get("color").is_none(), "unset removes: {alice}");
    let stored = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(stored["status"], "away");
    assert!(stored.get("color").is_none());

    // Several users in one request.
    s.upsert(&[json!({ "id": "bob" })]).await;
    let r = s
        .patch("/users")
        .auth(&Auth::Server)
        .json(json!({ "users": [
            { "id": "alice", "set": { "status": "one" } },
            { "id": "bob", "set": { "status": "two" } }
        ] }))
        .send()
        .await;
    let body = r.ok(200);
    assert_eq!(body["users"]["alice"]["status"], "one");
    assert_eq!(body["users"]["bob"]["status"], "two");
}

/// Numbers in custom data come back exactly as written: an app storing a float reads the same float, so a write
/// of what it read changes nothing.
#[tokio::test]
async fn custom_numbers_read_back_exactly() {
    let s = Server::in_process().await;
    // Each of these was read as a neighbouring double (one unit in the last place off) by a best-effort parser.
    let numbers = [
        1.3334086232277007e-71,
        -8.088841257752153e-184,
        1.8510366350748305e245,
        7.430287280994896e-287,
    ];
    s.upsert(&[json!({ "id": "alice", "scores": numbers })])
        .await;
    let stored = s.user_as(&Auth::Server, "alice").await;
    let read: Vec<f64> = stored["scores"]
        .as_array()
        .unwrap_or_else(|| panic!("scores missing: {stored}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(read, numbers, "stored: {stored}");
    s.partial_update(&Auth::Server, "alice", json!({ "best": numbers[0] }), &[])
        .await
        .ok(200);
    let stored = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(
        stored["best"].as_f64(),
        Some(numbers[0]),
        "stored: {stored}"
    );
}

#[tokio::test]
async fn query_users_shape_and_live_presence() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "status": "busy" }),
        json!({ "id": "bob", "name": "Bob" }),
    ])
    .await;
    let _ws = s.connect("alice").await;
    let r = s
        .query_users(
            &Auth::user("bob"),
            None,
            json!({ "filter_conditions": { "id": { "$in": ["alice", "bob"] } }, "sort": [{ "field": "id", "direction": 1 }] }),
        )
        .await;
    let body = r.ok(200).clone();
    let parsed: QueryUsersResponse =
        serde_json::from_value(body.clone()).expect("QueryUsersResponse shape");
    assert_eq!(parsed.users.len(), 2);
    let alice = &body["users"][0];
    assert_public_user(alice, "alice");
    assert_eq!(alice["online"], true);
    assert_eq!(alice["status"], "busy");
    time(&alice["last_active"]);
    assert_eq!(body["users"][1]["online"], false);
}

#[tokio::test]
async fn query_users_limit_and_offset() {
    let s = Server::in_process().await;
    let users: Vec<Value> = (0..35)
        .map(|i| json!({ "id": format!("u{i:02}"), "n": i }))
        .collect();
    s.upsert(&users).await;
    let all = |extra: Value| {
        let mut p = json!({ "filter_conditions": {}, "sort": [{ "field": "id", "direction": 1 }] });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    assert_eq!(
        s.user_ids_as(&Auth::Server, all(json!({}))).await.len(),
        30,
        "default limit is 30"
    );
    let page = s
        .user_ids_as(&Auth::Server, all(json!({ "limit": 5, "offset": 10 })))
        .await;
    assert_eq!(page, strs(&["u10", "u11", "u12", "u13", "u14"]));
    assert_eq!(
        s.user_ids_as(&Auth::Server, all(json!({ "limit": 100 })))
            .await
            .len(),
        35
    );
    assert!(s
        .user_ids_as(&Auth::Server, all(json!({ "offset": 1000 })))
        .await
        .is_empty());
    for bad in [
        json!({ "limit": 101 }),
        json!({ "offset": 1001 }),
        json!({ "limit": -1 }),
        json!({ "limit": "ten" }),
    ] {
        s.query_users(&Auth::Server, None, all(bad.clone()))
            .await
            .err(400, error_code::INPUT);
    }
}

/// Users with a spread of field values for the filter tests.
async fn filter_fixture(s: &Server) {
    s.upsert(&[
        json!({ "id": "ann", "name": "johnny walker", "age": 30, "joined": "2024-01-05T00:00:00Z", "tags": ["a", "b"], "teams": ["red", "blue"], "status": "busy" }),
        json!({ "id": "ben", "name": "bob jones", "age": 25, "joined": "2024-03-01T00:00:00Z", "tags": ["b"], "teams": ["blue"] }),
        json!({ "id": "cat", "name": "major tom", "age": 41, "joined": "2023-12-31T23:00:00Z", "tags": [], "role": "admin" }),
        json!({ "id": "dov", "name": "dov", "age": 25.5, "status": "away" }),
    ])
    .await;
}

async fn ids_for(s: &Server, filter: Value) -> Vec<String> {
    let r = s
        .query_users(
            &Auth::Server,
            None,
            json!({ "filter_conditions": filter, "sort": [{ "field": "id", "direction": 1 }] }),
        )
        .await;
    assert_eq!(r.status, 200, "filter {filter}: {}", r.text);
    ids(&r.json["users"])
}

#[tokio::test]
async fn query_users_filter_operators() {
    let s = Server::in_process().await;
    filter_fixture(&s).await;
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &["ann", "ben", "cat", "dov"]),
        (json!({ "id": "ben" }), &["ben"]),
        (json!({ "id": { "$eq": "ben" } }), &["ben"]),
        (json!({ "id": { "$ne": "ben" } }), &["ann", "cat", "dov"]),
        (json!({ "age": 25 }), &["ben"]),
        (json!({ "age": { "$gt": 25 } }), &["ann", "cat", "dov"]),
        (
            json!({ "age": { "$gte": 25 } }),
            &["ann", "ben", "cat", "dov"],
        ),
        (json!({ "age": { "$lt": 30 } }), &["ben", "dov"]),
        (json!({ "age": { "$lte": 30 } }), &["ann", "ben", "dov"]),
        (json!({ "age": { "$gt": 25, "$lt": 41 } }), &["ann", "dov"]),
        (json!({ "name": { "$gt": "dov" } }), &["ann", "cat"]),
        (json!({ "name": { "$lte": "bob jones" } }), &["ben"]),
        (
            json!({ "id": { "$in": ["ann", "cat", "nobody"] } }),
            &["ann", "cat"],
        ),
        (json!({ "id": { "$nin": ["ann", "cat"] } }), &["ben", "dov"]),
        (json!({ "status": { "$exists": true } }), &["ann", "dov"]),
        (json!({ "status": { "$exists": false } }), &["ben", "cat"]),
        (
            json!({ "name": { "$autocomplete": "jo" } }),
            &["ann", "ben"],
        ),
        (json!({ "name": { "$q": "tom" } }), &["cat"]),
        (json!({ "teams": { "$contains": "red" } }), &["ann"]),
        (json!({ "teams": { "$contains": "blue" } }), &["ann", "ben"]),
        (json!({ "tags": { "$contains": "b" } }), &["ann", "ben"]),
        (json!({ "role": "admin" }), &["cat"]),
        (
            json!({ "role": { "$ne": "admin" } }),
            &["ann", "ben", "dov"],
        ),
        (
            json!({ "$or": [{ "id": "ann" }, { "age": { "$gt": 40 } }] }),
            &["ann", "cat"],
        ),
        (
            json!({ "$and": [{ "age": { "$gte": 25 } }, { "status": "away" }] }),
            &["dov"],
        ),
        (
            json!({ "$nor": [{ "id": "ann" }, { "id": "ben" }] }),
            &["cat", "dov"],
        ),
        (
            json!({ "id": { "$in": ["ann", "ben", "cat"] }, "age": { "$lt": 40 } }),
            &["ann", "ben"],
        ),
        (
            json!({ "$or": [{ "$and": [{ "age": 25 }, { "id": "ben" }] }, { "name": "dov" }] }),
            &["ben", "dov"],
        ),
    ];
    let mut wrong = Vec::new();
    for (filter, want) in cases {
        let got = ids_for(&s, filter.clone()).await;
        if got != strs(want) {
            wrong.push(format!("{filter}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "filters gave wrong results:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn query_users_compares_dates_as_time() {
    let s = Server::in_process().await;
    filter_fixture(&s).await;
    // 2024-01-05T01:00:00+02:00 is 2024-01-04T23:00:00Z: as a time it is *before* ann's join date, as a string
    // it sorts after it.
    let got = ids_for(
        &s,
        json!({ "joined": { "$gt": "2024-01-05T01:00:00+02:00" } }),
    )
    .await;
    assert_eq!(got, strs(&["ann", "ben"]));
    let got = ids_for(
        &s,
        json!({ "joined": { "$lt": "2024-01-01T00:30:00+01:00" } }),
    )
    .await;
    assert_eq!(
        got,
        strs(&["cat"]),
        "2023-12-31T23:00Z equals 2024-01-01T00:00+01:00, which is before 00:30+01:00"
    );

    // Built-in timestamps: every fixture user was created before this instant; none after.
    let t = now();
    sleep_ms(20).await;
    s.upsert(&[json!({ "id": "late" })]).await;
    let t_str = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        ids_for(&s, json!({ "created_at": { "$lt": t_str } })).await,
        strs(&["ann", "ben", "cat", "dov"])
    );
    assert_eq!(
        ids_for(&s, json!({ "created_at": { "$gte": t_str } })).await,
        strs(&["late"])
    );
    assert_eq!(
        ids_for(&s, json!({ "updated_at": { "$gt": t_str } })).await,
        strs(&["late"])
    );
}

#[tokio::test]
async fn query_users_filter_on_online_and_last_active() {
    let s = Server::start().await;
    filter_fixture(&s).await;
    let t = now();
    sleep_ms(20).await;
    let _a = s.connect("ann").await;
    let _c = s.connect("cat").await;
    assert_eq!(
        ids_for(&s, json!({ "online": true })).await,
        strs(&["ann", "cat"])
    );
    assert_eq!(
        ids_for(&s, json!({ "online": false })).await,
        strs(&["ben", "dov"])
    );
    assert_eq!(
        ids_for(
            &s,
            json!({ "online": { "$eq": true }, "id": { "$ne": "cat" } })
        )
        .await,
        strs(&["ann"])
    );
    let t_str = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        ids_for(&s, json!({ "last_active": { "$gte": t_str } })).await,
        strs(&["ann", "cat"])
    );
}

#[tokio::test]
async fn query_users_sort() {
    let s = Server::in_process().await;
    filter_fixture(&s).await;
    let q = |sort: Value| json!({ "filter_conditions": {}, "sort": sort });
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "age", "direction": 1 }]))
        )
        .await,
        strs(&["ben", "dov", "ann", "cat"])
    );
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "age", "direction": -1 }]))
        )
        .await,
        strs(&["cat", "ann", "dov", "ben"])
    );
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "name", "direction": 1 }]))
        )
        .await,
        strs(&["ben", "dov", "ann", "cat"])
    );
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "id", "direction": -1 }]))
        )
        .await,
        strs(&["dov", "cat", "ben", "ann"])
    );
    // Multi-key: role ascending ("admin" < "user"), then id descending.
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "role", "direction": 1 }, { "field": "id", "direction": -1 }]))
        )
        .await,
        strs(&["cat", "dov", "ben", "ann"])
    );
    // Sort by creation time follows creation order, in both directions. The newest user's id sorts last, so
    // neither the id tie-break nor insertion order can produce these orders by themselves; the four fixture users
    // share one creation time (one upsert) and fall back to id ascending.
    sleep_ms(1100).await;
    s.upsert(&[json!({ "id": "zzz-newest" })]).await;
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "created_at", "direction": -1 }])),
        )
        .await,
        strs(&["zzz-newest", "ann", "ben", "cat", "dov"])
    );
    assert_eq!(
        s.user_ids_as(
            &Auth::Server,
            q(json!([{ "field": "created_at", "direction": 1 }])),
        )
        .await,
        strs(&["ann", "ben", "cat", "dov", "zzz-newest"])
    );
}

#[tokio::test]
async fn query_users_rejects_bad_payloads() {
    let s = Server::in_process().await;
    filter_fixture(&s).await;
    let bad_payloads = [
        json!({ "filter_conditions": { "id": { "$foo": 1 } } }),
        json!({ "filter_conditions": { "id": { "$in": "ann" } } }),
        json!({ "filter_conditions": { "id": { "$nin": 3 } } }),
        json!({ "filter_conditions": { "status": { "$exists": "yes" } } }),
        json!({ "filter_conditions": { "$or": "x" } }),
        json!({ "filter_conditions": { "$and": {} } }),
        json!({ "filter_conditions": { "$bogus": [] } }),
        json!({ "filter_conditions": [] }),
        json!({ "filter_conditions": {}, "sort": [{ "field": "id", "direction": 2 }] }),
        json!({ "filter_conditions": {}, "sort": [{ "field": "id", "direction": "up" }] }),
        json!({ "filter_conditions": {}, "sort": "id" }),
        json!({ "filter_conditions": {}, "presence": "yes" }),
    ];
    let mut wrong = Vec::new();
    for p in bad_payloads {
        let r = s.query_users(&Auth::Server, None, p.clone()).await;
        if (r.status, r.json["code"].as_i64()) != (400, Some(error_code::INPUT)) {
            wrong.push(format!("{p}: HTTP {} {}", r.status, r.text));
        } else {
            assert_error_envelope(&r.json, 400, error_code::INPUT, &p.to_string());
        }
    }
    // Not JSON at all, and no payload.
    for raw in ["{not json", "", "[1,2]"] {
        let r = s
            .get("/users")
            .auth(&Auth::Server)
            .query("payload", raw)
            .send()
            .await;
        if (r.status, r.json["code"].as_i64()) != (400, Some(error_code::INPUT)) {
            wrong.push(format!("payload={raw:?}: HTTP {} {}", r.status, r.text));
        }
    }
    let r = s.get("/users").auth(&Auth::Server).send().await;
    if (r.status, r.json["code"].as_i64()) != (400, Some(error_code::INPUT)) {
        wrong.push(format!("no payload: HTTP {} {}", r.status, r.text));
    }
    assert!(
        wrong.is_empty(),
        "expected 400 code 4 for:\n{}",
        wrong.join("\n")
    );
    // The server is unharmed.
    assert_eq!(s.user_ids(json!({ "id": "ann" })).await, strs(&["ann"]));
}

#[tokio::test]
async fn write_endpoints_reject_bad_bodies() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    let mut wrong = Vec::new();
    let cases: Vec<(&str, &str, String)> = vec![
        ("POST", "/users", "{not json".into()),
        ("POST", "/users", r#"{"users": []}"#.into()),
        (
            "POST",
            "/users",
            r#"{"users": {"x": "not an object"}}"#.into(),
        ),
        ("POST", "/users", r#"{"users": {"x": {"id": 5}}}"#.into()),
        ("POST", "/users", r#"{"nothing": true}"#.into()),
        (
            "POST",
            "/users",
            r#"{"users": {"ann": {"id": "ann", "name": 12}}}"#.into(),
        ),
        (
            "POST",
            "/users",
            r#"{"users": {"ann": {"id": "ann", "invisible": "yes"}}}"#.into(),
        ),
        ("PATCH", "/users", "[]".into()),
        ("PATCH", "/users", r#"{"users": {"id": "ann"}}"#.into()),
        (
            "PATCH",
            "/users",
            r#"{"users": [{"set": {"a": 1}}]}"#.into(),
        ),
        (
            "PATCH",
            "/users",
            r#"{"users": [{"id": "ann", "set": []}]}"#.into(),
        ),
        (
            "PATCH",
            "/users",
            r#"{"users": [{"id": "ann", "unset": "color"}]}"#.into(),
        ),
        (
            "PATCH",
            "/users",
            r#"{"users": [{"id": "ann", "set": {"invisible": 1}}]}"#.into(),
        ),
        ("POST", "/channels", "{not json".into()),
        (
            "POST",
            "/channels",
            r#"{"filter_conditions": {"cid": {"$nope": 1}}}"#.into(),
        ),
        (
            "POST",
            "/channels",
            r#"{"filter_conditions": {}, "sort": [{"field": "cid", "direction": 0}]}"#.into(),
        ),
        (
            "POST",
            "/channels",
            r#"{"filter_conditions": {}, "limit": "many"}"#.into(),
        ),
        ("POST", "/channels/messaging/c1/query", "{not json".into()),
        (
            "POST",
            "/channels/messaging/c1/query",
            r#"{"data": {"members": "ann"}}"#.into(),
        ),
        (
            "POST",
            "/channels/messaging/c1/query",
            r#"{"watch": "yes"}"#.into(),
        ),
        (
            "POST",
            "/channels/messaging/query",
            r#"{"data": {}}"#.into(),
        ),
    ];
    for (method, path, body) in &cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = s
            .call(m, path)
            .auth(&Auth::Server)
            .raw_json(body.clone())
            .send()
            .await;
        if (r.status, r.json["code"].as_i64()) != (400, Some(error_code::INPUT)) {
            wrong.push(format!(
                "{method} {path} {body}: HTTP {} {}",
                r.status, r.text
            ));
        } else {
            assert_error_envelope(&r.json, 400, error_code::INPUT, path);
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 400 code 4 for:\n{}",
        wrong.join("\n")
    );
    // ann is unchanged and the server still answers.
    let ann = s.user_as(&Auth::Server, "ann").await;
    assert!(ann.get("name").is_none() || ann["name"] == "", "{ann}");
}

#[tokio::test]
async fn oversized_body_is_413_code_22() {
    let s = Server::in_process().await;
    let big = "x".repeat(1024 * 1024 + 10);
    let body = json!({ "users": { "big": { "id": "big", "blob": big } } });
    let r = s.post("/users").auth(&Auth::Server).json(body).send().await;
    r.err(413, error_code::PAYLOAD_TOO_BIG);
    assert!(s.user_ids(json!({ "id": "big" })).await.is_empty());
    // Just under the limit is read: a body whose size is all in one large filter (user data itself is capped at
    // 5 KB, see limits.rs) gets as far as the filter's own cap (128 KB), not 413.
    let cids: Vec<String> = (0..1000).map(|i| format!("messaging:{i:0>950}")).collect();
    let body = json!({ "filter_conditions": { "cid": { "$in": cids } } });
    assert!(body.to_string().len() > 900 * 1024);
    let r = s.query_channels(&Auth::Server, None, body).await;
    let err = r.err(400, error_code::INPUT);
    assert!(err.message.contains("bytes serialized"), "{}", err.message);
}

/// Users whose custom `rank` mixes every JSON type, listed in the order the sort must give them: by type (null and
/// missing last, then numbers, strings, objects, arrays, booleans, timestamps), then by value within the type. The
/// ids are chosen so that id order is not this order.
fn mixed_rank_users() -> Vec<(String, Value)> {
    let ranks = [
        json!(-7.5),
        json!(-1),
        json!(0),
        json!(3),
        json!(40),
        json!(1e9),
        json!(""),
        json!("Zebra"),
        json!("apple"),
        json!("banana"),
        json!("not 2024-01-01"),
        json!({ "a": 1 }),
        json!({ "a": 2 }),
        json!({ "b": 0 }),
        json!([]),
        json!([1]),
        json!([1, 2]),
        json!(["x"]),
        json!(false),
        json!(true),
        json!("1999-12-31T23:59:59Z"),
        json!("2024-05-01T09:00:00+02:00"),
        json!("2024-05-01T08:00:00Z"),
        json!("2024-05-01T08:00:00.5Z"),
    ];
    ranks
        .into_iter()
        .enumerate()
        .map(|(i, rank)| (format!("u{:02}", (i * 7) % 24 + 10), rank))
        .collect()
}

#[tokio::test]
async fn sorting_on_a_field_of_mixed_types_gives_one_total_order_both_ways() {
    let s = Server::in_process().await;
    let users = mixed_rank_users();
    let mut batch: Vec<Value> = users
        .iter()
        .map(|(id, rank)| json!({ "id": id, "rank": rank }))
        .collect();
    // Null and missing values sort after every value in either direction, by id.
    batch.push(json!({ "id": "a-null", "rank": null }));
    batch.push(json!({ "id": "a-missing" }));
    batch.reverse();
    s.upsert(&batch).await;
    let ascending: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();
    let mut descending = ascending.clone();
    descending.reverse();
    let tail = strs(&["a-missing", "a-null"]);
    for (direction, mut want) in [(1, ascending), (-1, descending)] {
        want.extend(tail.iter().cloned());
        let got = s
            .user_ids_as(
                &Auth::Server,
                json!({
                    "filter_conditions": {},
                    "sort": [{ "field": "rank", "direction": direction }],
                    "limit": 100,
                }),
            )
            .await;
        assert_eq!(got, want, "sort on rank, direction {direction}");
    }
}

#[tokio::test]
async fn range_filters_match_only_values_of_the_bounds_type() {
    let s = Server::in_process().await;
    // Numbers, strings that read as numbers, other strings and values of every other JSON type.
    let values = [
        json!(1),
        json!(5),
        json!(10.5),
        json!(-3),
        json!("1"),
        json!("5"),
        json!("10"),
        json!("abc"),
        json!(""),
        json!(true),
        json!(false),
        json!([5]),
        json!(["5"]),
        json!({ "n": 5 }),
        json!(null),
    ];
    let mut batch: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!({ "id": format!("u{i:02}"), "rank": v }))
        .collect();
    batch.push(json!({ "id": "u-missing" }));
    s.upsert(&batch).await;

    // The claim: a range operator compares a value with its bound only when both are numbers or both strings.
    let holds = |value: &Value, op: &str, bound: &Value| -> bool {
        let order = match (value, bound) {
            (Value::Number(a), Value::Number(b)) => {
                a.as_f64().unwrap().partial_cmp(&b.as_f64().unwrap())
            }
            (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
            _ => None,
        };
        order.is_some_and(|o| match op {
            "$gt" => o.is_gt(),
            "$gte" => o.is_ge(),
            "$lt" => o.is_lt(),
            "$lte" => o.is_le(),
            _ => unreachable!(),
        })
    };
    for bound in [
        json!(0),
        json!(5),
        json!(100),
        json!("0"),
        json!("5"),
        json!("zzz"),
    ] {
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            let want: Vec<String> = batch
                .iter()
                .filter(|u| u.get("rank").is_some_and(|v| holds(v, op, &bound)))
                .map(|u| u["id"].as_str().unwrap().to_string())
                .collect();
            let got = ids_for(&s, json!({ "rank": { op: bound } })).await;
            assert_eq!(
                got, want,
                "rank {op} {bound}: only values of the bound's type may match"
            );
        }
    }
}
