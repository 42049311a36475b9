//! One user cannot stall everyone's queries: another user's pinned queries (presence by `id $in`, channel recovery
//! by `cid $in`) never wait, their unpinned queries wait at most about one of the heavy user's queries, a caller
//! may keep only a few queries waiting (429 / code 9 beyond), and a query whose client hung up stops. Latencies are
//! compared with the cost of a plain and of a heavy query measured in the same test, not with wall-clock numbers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use presence_protocol::codes::error_code;
use reqwest::Url;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const USERS: usize = 2000;

/// About 4 KB of text in which a search finds its words late.
fn bio(i: usize) -> String {
    let mut text = String::new();
    while text.len() < 4000 {
        text.push_str("lorem ipsum dolor sit amet consectetur adipiscing elit ");
    }
    format!("{text} user{i}")
}

/// A server with `USERS` users with long bios, and two channels of alice's.
async fn crowded() -> Server {
    let s = Server::start().await;
    for chunk in 0..USERS / 100 {
        let users: Vec<Value> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| json!({ "id": format!("u{i}"), "bio": bio(i) }))
            .collect();
        s.upsert(&users).await;
    }
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "mallory" })])
        .await;
    for id in ["a1", "a2"] {
        s.create_channel("messaging", id, &["alice", "u1"], json!({}))
            .await;
    }
    s
}

/// A filter within every cap that costs many plain queries: `searches` substring searches over each user's bio,
/// all evaluated.
fn heavy_filter(searches: usize) -> Value {
    let q = "lorem ipsum dolor sit amet consectetur adipiscing elit user absent";
    let all: Vec<Value> = (0..searches)
        .map(|_| json!({ "bio": { "$q": q } }))
        .collect();
    json!({ "$nor": all })
}

fn heavy() -> Value {
    json!({ "filter_conditions": heavy_filter(1) })
}

/// An unpinned query that reads every user once, the cheapest kind.
fn plain() -> Value {
    json!({ "filter_conditions": { "role": "admin" } })
}

async fn timed(f: impl std::future::Future<Output = Resp>) -> (Duration, Resp) {
    let started = Instant::now();
    let r = f.await;
    (started.elapsed(), r)
}

/// The cost of a plain unpinned query and of a heavy one, on the idle server (the least of three runs each).
async fn costs(s: &Server) -> (Duration, Duration) {
    let mut plain_cost = Duration::MAX;
    let mut heavy_cost = Duration::MAX;
    for _ in 0..3 {
        let (took, r) = timed(s.query_users(&Auth::user("alice"), None, plain())).await;
        r.ok(200);
        plain_cost = plain_cost.min(took);
        let (took, r) = timed(s.query_users(&Auth::user("mallory"), None, heavy())).await;
        r.ok(200);
        heavy_cost = heavy_cost.min(took);
    }
    eprintln!("plain query {plain_cost:?}, heavy query {heavy_cost:?}");
    assert!(
        heavy_cost > plain_cost * 3,
        "the heavy query must cost several plain ones: {heavy_cost:?} against {plain_cost:?}"
    );
    (plain_cost, heavy_cost)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_queries_do_not_wait_behind_one_users_backlog() {
    let s = crowded().await;
    let (plain_cost, heavy_cost) = costs(&s).await;
    // Mallory keeps six heavy queries in flight until alice is done (a minute at most).
    let stop = Instant::now() + Duration::from_secs(60);
    let looping: Vec<_> = (0..6)
        .map(|_| {
            let (base, token) = (s.base.clone(), s.user_token("mallory"));
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while Instant::now() < stop {
                    let _ = http
                        .get(format!("{base}/users"))
                        .query(&[
                            ("api_key", API_KEY),
                            ("user_id", "mallory"),
                            ("payload", &heavy().to_string()),
                        ])
                        .header("Authorization", &token)
                        .header("stream-auth-type", "jwt")
                        .send()
                        .await;
                }
            })
        })
        .collect();
    tokio::time::sleep(heavy_cost * 2).await;
    let alice = Auth::user("alice");
    let (mut pinned_users, mut recoveries, mut unpinned) = (vec![], vec![], vec![]);
    for _ in 0..5 {
        let pinned = json!({ "filter_conditions": { "id": { "$in": ["u1", "u2", "u3"] } }, "presence": true });
        let (took, r) = timed(s.query_users(&alice, None, pinned)).await;
        assert_eq!(r.ok(200)["users"].as_array().unwrap().len(), 3);
        pinned_users.push(took);
        // What the SDK sends after every reconnect.
        let recovery = json!({
            "filter_conditions": { "cid": { "$in": ["messaging:a1", "messaging:a2"] } },
            "watch": true, "presence": true, "state": true
        });
        let (took, r) = timed(s.query_channels(&alice, None, recovery)).await;
        assert_eq!(cids(r.ok(201)).len(), 2);
        recoveries.push(took);
        let (took, r) = timed(s.query_users(&alice, None, plain())).await;
        r.ok(200);
        unpinned.push(took);
    }
    let still_loading = Instant::now() < stop;
    for task in looping {
        task.abort();
    }
    eprintln!(
        "under load: pinned queryUsers {:?}, cid queryChannels {:?}, unpinned queryUsers {:?} (medians; plain {plain_cost:?}, heavy {heavy_cost:?})",
        median(pinned_users.clone()),
        median(recoveries.clone()),
        median(unpinned.clone())
    );
    // Pinned queries never wait for a slot: under load they cost a few plain unpinned queries, well under one
    // heavy query.
    let prompt = (plain_cost * 4).max(heavy_cost / 4);
    for (what, took) in [
        ("queryUsers by id", &pinned_users),
        ("queryChannels by cid", &recoveries),
    ] {
        let m = median(took.clone());
        assert!(
            m < prompt,
            "{what} under load: median {m:?} ({took:?}), a plain query costs {plain_cost:?}"
        );
    }
    // An unpinned query waits at most for the rest of one of mallory's queries, whatever her backlog (her six in
    // line would make it wait six); one more for the noise of a shared machine.
    let worst = unpinned.iter().max().unwrap();
    assert!(
        *worst < heavy_cost * 3 + plain_cost * 2,
        "alice's unpinned queries under load: {unpinned:?}; a heavy query costs {heavy_cost:?}, a plain one {plain_cost:?}"
    );
    assert!(still_loading, "mallory's load ended before alice was done");
}

/// Sends a queryUsers request as `user` over a connection of its own, and returns the connection (dropping it
/// hangs up).
async fn send_raw(s: &Server, user: &str, payload: &Value) -> TcpStream {
    let mut url = Url::parse(&s.url("/users")).unwrap();
    url.query_pairs_mut()
        .append_pair("api_key", API_KEY)
        .append_pair("user_id", user)
        .append_pair("payload", &payload.to_string());
    let request = format!(
        "GET {}?{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\nstream-auth-type: jwt\r\n\r\n",
        url.path(),
        url.query().unwrap(),
        s.port,
        s.user_token(user)
    );
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_whose_client_hung_up_stop_and_leave_the_line() {
    let s = crowded().await;
    let (plain_cost, heavy_cost) = costs(&s).await;
    // Eight heavy queries in flight, running or waiting, then every client hangs up.
    let mut hung_up = Vec::new();
    for _ in 0..8 {
        hung_up.push(send_raw(&s, "mallory", &heavy()).await);
    }
    tokio::time::sleep(plain_cost.min(heavy_cost / 4)).await;
    drop(hung_up);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The same user's next query does not wait for the queries nobody will read.
    let (took, r) = timed(s.query_users(&Auth::user("mallory"), None, plain())).await;
    r.ok(200);
    assert!(
        took < heavy_cost / 2,
        "a query after 8 abandoned heavy ones took {took:?}; one heavy query costs {heavy_cost:?}, a plain one {plain_cost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_keeps_only_a_few_queries_waiting() {
    let s = crowded().await;
    let slots = std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1);
    // More than run at once plus the 8 that may wait.
    let mallory = Auth::user("mallory");
    let answers =
        join_all((0..slots + 8 + 3).map(|_| s.query_users(&mallory, None, heavy()))).await;
    let refused: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(
        !refused.is_empty(),
        "statuses: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &refused {
        let err = r.err(429, error_code::RATE_LIMIT);
        assert!(
            err.message.contains("too many queries waiting"),
            "{}",
            err.message
        );
        assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{}", r.desc);
    }
    // Everything else was answered, and others are not refused.
    for r in answers.iter().filter(|r| r.status != 429) {
        r.ok(200);
    }
    s.query_users(&Auth::user("alice"), None, plain())
        .await
        .ok(200);
}
