//! What one query may ask for and cost: filter caps (each just under passes, just over is refused with 400 / code 4
//! naming the limit, on queryUsers and queryChannels alike), and a query that runs out of its time is refused as
//! too expensive instead of holding a core for seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use presence_protocol::codes::error_code;
use serde_json::{json, Map, Value};

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

/// queryUsers and queryChannels with `filter`, as a user.
async fn both(s: &Server, filter: &Value) -> [Resp; 2] {
    let auth = Auth::user("ann");
    [
        s.query_users(&auth, None, json!({ "filter_conditions": filter }))
            .await,
        s.query_channels(&auth, None, json!({ "filter_conditions": filter }))
            .await,
    ]
}

async fn assert_accepted(s: &Server, filter: &Value) {
    let [users, channels] = both(s, filter).await;
    users.ok(200);
    channels.ok(201);
}

async fn assert_refused(s: &Server, filter: &Value, words: &str) {
    for r in both(s, filter).await {
        assert_limit(&r, words);
    }
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn search_text_is_capped_at_100_characters_and_10_words() {
    let s = Server::in_process().await;
    for op in ["$q", "$autocomplete"] {
        assert_accepted(&s, &json!({ "name": { op: "é".repeat(100) } })).await;
        assert_refused(
            &s,
            &json!({ "name": { op: "é".repeat(101) } }),
            "101 characters, over the limit of 100",
        )
        .await;
    }
    assert_accepted(&s, &json!({ "name": { "$q": words(10) } })).await;
    assert_refused(
        &s,
        &json!({ "name": { "$q": words(11) } }),
        "11 words, over the limit of 10",
    )
    .await;
}

#[tokio::test]
async fn logical_operators_take_at_most_50_filters() {
    let s = Server::in_process().await;
    for op in ["$or", "$and", "$nor"] {
        let subs = |n: usize| -> Vec<Value> { (0..n).map(|i| json!({ "n": i })).collect() };
        assert_accepted(&s, &json!({ op: subs(50) })).await;
        assert_refused(
            &s,
            &json!({ op: subs(51) }),
            "51 filters, over the limit of 50",
        )
        .await;
        // Empty sub-filters hold no condition but are counted all the same.
        let empty = vec![json!({}); 51];
        assert_refused(&s, &json!({ op: empty }), "over the limit of 50").await;
    }
}

#[tokio::test]
async fn a_filter_holds_at_most_100_conditions() {
    let s = Server::in_process().await;
    let fields = |n: usize| -> Value {
        let map: Map<String, Value> = (0..n)
            .map(|i| (format!("f{i}"), json!({ "$ne": i })))
            .collect();
        Value::Object(map)
    };
    assert_accepted(&s, &fields(100)).await;
    assert_refused(&s, &fields(101), "more than 100 conditions").await;
    // Conditions count across nested operators and several operators on one field.
    let nested = json!({
        "$or": (0..2).map(|_| fields(40)).collect::<Vec<_>>(),
        "x": { "$gt": 1, "$lt": 9 },
        "$and": [fields(19)],
    });
    assert_refused(&s, &nested, "more than 100 conditions").await;
}

#[tokio::test]
async fn a_filter_holds_at_most_2000_in_values_in_all() {
    let s = Server::in_process().await;
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("u{i}")).collect() };
    assert_accepted(
        &s,
        &json!({ "id": { "$in": ids(1000) }, "name": { "$nin": ids(1000) } }),
    )
    .await;
    assert_refused(
        &s,
        &json!({ "id": { "$in": ids(1000) }, "name": { "$nin": ids(1000) }, "x": { "$in": [1] } }),
        "more than 2000 $in/$nin values",
    )
    .await;
}

#[tokio::test]
async fn a_filter_is_at_most_128_kb_of_json() {
    let s = Server::in_process().await;
    let sized = |total: usize| -> Value {
        let mut filter = json!({ "name": "" });
        let pad = total - filter.to_string().len();
        filter["name"] = json!("x".repeat(pad));
        filter
    };
    // Only a body carries that much: a URL (queryUsers' `payload`) ends at 64 KB.
    let query = |filter: Value| json!({ "filter_conditions": filter });
    let ann = Auth::user("ann");
    s.query_channels(&ann, None, query(sized(128 * 1024)))
        .await
        .ok(201);
    let r = s
        .query_channels(&ann, None, query(sized(128 * 1024 + 1)))
        .await;
    assert_limit(&r, "over the limit of 131072 bytes");
}

/// A bio of about 4 KB whose words a search finds only late.
fn bio(i: usize) -> String {
    let mut text = String::new();
    while text.len() < 4000 {
        text.push_str("lorem ipsum dolor sit amet consectetur adipiscing elit ");
    }
    format!("{text} user{i}")
}

/// The costliest filter the caps let through, over users with long text: 100 substring searches of 10 words each
/// (all found but the last, so each scans the whole text) that `$nor` evaluates in full for every user.
fn costliest_filter() -> Value {
    let mut terms: Vec<&str> = "lorem ipsum dolor sit amet consectetur adipiscing elit user"
        .split(' ')
        .collect();
    terms.push("absent");
    let q = terms.join(" ");
    let searches =
        |n: usize| -> Vec<Value> { (0..n).map(|_| json!({ "bio": { "$q": q } })).collect() };
    json!({ "$nor": searches(50), "$and": [{ "$nor": searches(50) }] })
}

#[tokio::test]
async fn a_query_that_runs_out_of_time_is_refused_as_too_expensive() {
    let s = Server::in_process().await;
    for chunk in 0..30 {
        let users: Vec<Value> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| json!({ "id": format!("u{i}"), "bio": bio(i) }))
            .collect();
        s.upsert(&users).await;
    }
    let started = Instant::now();
    let r = s
        .query_users(
            &Auth::user("ann"),
            None,
            json!({ "filter_conditions": costliest_filter() }),
        )
        .await;
    let took = started.elapsed();
    assert_limit(&r, "query too expensive");
    assert!(
        r.err(400, error_code::INPUT)
            .message
            .contains("narrow the filter"),
        "the refusal says what to do: {}",
        r.text
    );
    // Refused once its time (half a second) ran out, not after examining all 3,000 users.
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // A plain query over the same users is answered.
    s.query_users(
        &Auth::user("ann"),
        None,
        json!({ "filter_conditions": { "bio": { "$q": "user7" } } }),
    )
    .await
    .ok(200);
}
