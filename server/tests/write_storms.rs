//! Writes that cannot be turned against followers: a user write names each user once, user tokens are paced
//! (429, code 9, `Retry-After`), and a follower whose socket stalls while a user flips back and forth ends on the
//! user's final state instead of being closed as too slow (4003).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;
use futures_util::future::join_all;
use presence_protocol::codes::{error_code, event_type};
use serde_json::{json, Value};

/// A bio large enough that every event about its user is a few kilobytes, within the 5 KB cap on user data.
fn bio() -> String {
    "b".repeat(4500)
}

#[tokio::test]
async fn a_partial_update_names_each_user_once() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "u" }), json!({ "id": "v" })])
        .await;
    for auth in [Auth::user("u"), Auth::Server] {
        let r = s
            .patch("/users")
            .auth(&auth)
            .json(json!({ "users": [
                { "id": "u", "set": { "status": "a" } },
                { "id": "u", "set": { "status": "b" } },
            ] }))
            .send()
            .await;
        let e = r.err(400, error_code::INPUT);
        assert!(e.message.contains("\"u\""), "{auth:?}: {}", e.message);
        assert!(e.message.contains("more than once"), "{}", e.message);
    }
    // Nothing was applied.
    assert_eq!(s.user_as(&Auth::Server, "u").await["status"], Value::Null);
    // Distinct users in one request are fine.
    s.patch("/users")
        .auth(&Auth::Server)
        .json(json!({ "users": [
            { "id": "u", "set": { "status": "a" } },
            { "id": "v", "set": { "status": "b" } },
        ] }))
        .send()
        .await
        .ok(200);
}

#[tokio::test]
async fn an_upsert_names_each_user_once_even_as_a_repeated_json_key() {
    let s = Server::in_process().await;
    // A JSON object may repeat a key; a map would keep the last one without a word.
    let body =
        r#"{"users": {"u": {"id": "u", "invisible": true}, "u": {"id": "u", "invisible": false}}}"#;
    for auth in [Auth::user("u"), Auth::Server] {
        let r = s.post("/users").auth(&auth).raw_json(body).send().await;
        let e = r.err(400, error_code::INPUT);
        assert!(e.message.contains("\"u\""), "{auth:?}: {}", e.message);
        assert!(e.message.contains("more than once"), "{}", e.message);
    }
    assert!(s.user_ids(json!({ "id": "u" })).await.is_empty());
}

#[tokio::test]
async fn user_writes_are_paced_per_user_token() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "u" }), json!({ "id": "v" })])
        .await;
    let flip = |auth: Auth, i: usize| {
        let s = &s;
        async move {
            s.partial_update(&auth, "u", json!({ "status": format!("s{i}") }), &[])
                .await
        }
    };
    // A burst of 20 goes through, each answer saying what is left of it; then about one a second.
    let started = Instant::now();
    let mut accepted = 0;
    let refused = loop {
        let r = flip(Auth::user("u"), accepted).await;
        if r.status == 429 {
            break r;
        }
        r.ok(200);
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("60"));
        let remaining: usize = r.header("x-ratelimit-remaining").unwrap().parse().unwrap();
        if accepted == 0 {
            assert_eq!(remaining, 19);
        }
        let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset >= now_secs() && reset <= now_secs() + 21, "{reset}");
        accepted += 1;
        assert!(accepted <= 100, "never refused");
    };
    let refill = started.elapsed().as_secs() as usize;
    assert!(
        (20..=21 + refill).contains(&accepted),
        "{accepted} writes let through in {refill} s"
    );
    // The next is refused until a write's worth has come back.
    refused.err(429, error_code::RATE_LIMIT);
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        refused.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    // Upserts draw on the same writes.
    s.upsert_as(&Auth::user("u"), &[json!({ "id": "u" })])
        .await
        .err(429, error_code::RATE_LIMIT);
    // The refused writes changed nothing.
    let last = format!("s{}", accepted - 1);
    assert_eq!(s.user_as(&Auth::Server, "u").await["status"], last.as_str());
    // Another user's writes, and the app's backend, are not held up.
    s.partial_update(&Auth::user("v"), "v", json!({ "status": "x" }), &[])
        .await
        .ok(200);
    let server = flip(Auth::Server, 99).await;
    server.ok(200);
    assert_eq!(server.header("x-ratelimit-limit"), None);
    // After the Retry-After, the user writes again.
    sleep_ms(1100).await;
    flip(Auth::user("u"), 21).await.ok(200);
}

#[tokio::test]
async fn the_write_pace_is_set_by_flags() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--user-writes-per-minute", 6)
            .env("PRESENCE_USER_WRITE_BURST", "3"),
    )
    .await;
    s.upsert(&[json!({ "id": "u" })]).await;
    for i in 0..3 {
        let r = s
            .partial_update(&Auth::user("u"), "u", json!({ "n": i }), &[])
            .await;
        r.ok(200);
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("6"));
    }
    s.partial_update(&Auth::user("u"), "u", json!({ "n": 3 }), &[])
        .await
        .err(429, error_code::RATE_LIMIT);
    let off = Server::start_with(ServerOpts::default().arg("--user-writes-per-minute", 0)).await;
    off.upsert(&[json!({ "id": "u" })]).await;
    for i in 0..40 {
        let r = off
            .partial_update(&Auth::user("u"), "u", json!({ "n": i }), &[])
            .await;
        r.ok(200);
        assert_eq!(r.header("x-ratelimit-limit"), None);
    }
}

/// What a storm did: flips applied, requests refused.
#[derive(Debug, Default)]
struct Storm {
    flips_applied: AtomicUsize,
    refused_as_duplicates: AtomicUsize,
    rate_limited: AtomicUsize,
}

/// For `secs`, `workers` clients as `auth` flip `user`'s invisibility as fast as the server takes it: each
/// request names the user 100 times (alternating) while the server accepts that, then once per request.
async fn toggle_storm(s: &Server, auth: &Auth, user: &str, workers: usize, secs: u64) -> Storm {
    let storm = Storm::default();
    let flips = AtomicUsize::new(0);
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    let worker = || async {
        while Instant::now() < deadline {
            let single = storm.refused_as_duplicates.load(Ordering::Relaxed) > 0;
            let n = if single { 1 } else { 100 };
            let users: Vec<Value> = (0..n)
                .map(|_| {
                    let invisible = flips.fetch_add(1, Ordering::Relaxed).is_multiple_of(2);
                    json!({ "id": user, "set": { "invisible": invisible } })
                })
                .collect();
            let r = s
                .patch("/users")
                .auth(auth)
                .json(json!({ "users": users }))
                .send()
                .await;
            match r.status {
                200 => storm.flips_applied.fetch_add(n, Ordering::Relaxed),
                400 => storm.refused_as_duplicates.fetch_add(1, Ordering::Relaxed),
                429 => {
                    assert_eq!(r.json["code"], error_code::RATE_LIMIT, "{}", r.text);
                    storm.rate_limited.fetch_add(1, Ordering::Relaxed)
                }
                other => panic!("storm request answered {other}: {}", r.text),
            };
        }
    };
    join_all((0..workers).map(|_| worker())).await;
    println!("{auth:?} storm on {user}: {storm:?}");
    storm
}

/// A follower of `user` (by queryUsers with presence) on a bare socket with a small receive buffer, so that
/// when it stops reading the server's writes to it block after little data: a phone between cells.
async fn stalled_follower(s: &Server, id: &str, user: &str) -> RawWs {
    let (follower, first) = RawWs::connect_with_recv_buffer(s, id, Some(16 * 1024)).await;
    let conn = first["connection_id"].as_str().unwrap().to_string();
    s.query_users(
        &Auth::user(id),
        Some(&conn),
        json!({ "filter_conditions": { "id": { "$in": [user] } }, "presence": true }),
    )
    .await
    .ok(200);
    follower
}

/// Reads what the follower was sent until nothing comes for a second: the events, and the close code if the
/// server closed it (1006 if the stream ended without a close frame).
async fn read_until_quiet(follower: &mut RawWs) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Instant::now() < deadline {
        let asked = Instant::now();
        match follower.read_frame(ms(1000)).await {
            Some(frame) if frame.opcode == 8 => return (events, frame.close_code()),
            Some(frame) => events.extend(frame.json()),
            None if asked.elapsed() < ms(900) => return (events, Some(1006)),
            None => break,
        }
    }
    (events, None)
}

/// The follower stayed connected, and the last word it has about `user` is `user` as queried now.
async fn assert_ends_on_final_state(s: &Server, follower: &mut RawWs, id: &str, user: &str) {
    let (events, closed) = read_until_quiet(follower).await;
    assert_eq!(
        closed,
        None,
        "the follower was closed after {} events",
        events.len()
    );
    let about: Vec<&Value> = events.iter().filter(|e| is_presence_of(e, user)).collect();
    let last = about.last().expect("no presence event about the user");
    let now = s.user_as(&Auth::user(id), user).await;
    assert_eq!(
        last["user"]["online"], now["online"],
        "last event {last}, now {now}"
    );
    // Still connected: the next change reaches it.
    s.partial_update(
        &Auth::Server,
        user,
        json!({ "invisible": false, "status": "after" }),
        &[],
    )
    .await
    .ok(200);
    let (events, closed) = read_until_quiet(follower).await;
    assert_eq!(closed, None);
    let last = events
        .iter()
        .rev()
        .find(|e| is_type_of(e, event_type::USER_UPDATED, user) || is_presence_of(e, user))
        .unwrap_or_else(|| panic!("nothing about {user} after the storm: {events:?}"));
    assert_eq!(last["user"]["status"], "after", "{last}");
    assert_eq!(last["user"]["online"], true, "{last}");
}

// Two threads, so that the followee's own client keeps reading while the storm runs: were it closed as too
// slow, the followee would go offline and the flips would stop reaching the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_survives_its_followee_toggle_storm() {
    // A pong timeout past the test: the bare follower never answers pings.
    let s = Server::start_with(ServerOpts::default().ping(5000, 60_000)).await;
    s.upsert(&[json!({ "id": "u", "bio": bio() }), json!({ "id": "f" })])
        .await;
    let _owner = s.connect("u").await;
    let mut follower = stalled_follower(&s, "f", "u").await;
    let storm = toggle_storm(&s, &Auth::user("u"), "u", 4, 3).await;
    assert_ends_on_final_state(&s, &mut follower, "f", "u").await;
    assert!(
        storm.rate_limited.load(Ordering::Relaxed) > 0,
        "the storm was never paced: {storm:?}"
    );
}

/// For `secs`, `workers` clients with a server token give every user in `ids` a new status in each request, as
/// fast as the server takes it. Returns the requests applied.
async fn status_storm(s: &Server, ids: &[String], workers: usize, secs: u64) -> usize {
    let rounds = AtomicUsize::new(0);
    let applied = AtomicUsize::new(0);
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    let worker = || async {
        while Instant::now() < deadline {
            let round = rounds.fetch_add(1, Ordering::Relaxed);
            let users: Vec<Value> = ids
                .iter()
                .map(|id| json!({ "id": id, "set": { "status": format!("round {round}") } }))
                .collect();
            s.patch("/users")
                .auth(&Auth::Server)
                .json(json!({ "users": users }))
                .send()
                .await
                .ok(200);
            applied.fetch_add(1, Ordering::Relaxed);
        }
    };
    join_all((0..workers).map(|_| worker())).await;
    applied.into_inner()
}

#[tokio::test]
async fn a_follower_that_stops_reading_gets_only_the_final_state_of_a_server_side_storm() {
    let s = Server::start_with(ServerOpts::default().ping(5000, 60_000)).await;
    let ids: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "bio": bio() }))
        .collect();
    s.upsert(&users).await;
    s.upsert(&[json!({ "id": "f" })]).await;
    let (mut follower, first) = RawWs::connect_with_recv_buffer(&s, "f", Some(16 * 1024)).await;
    let conn = first["connection_id"].as_str().unwrap().to_string();
    s.query_users(
        &Auth::user("f"),
        Some(&conn),
        json!({ "filter_conditions": { "id": { "$in": ids } }, "presence": true, "limit": 50 }),
    )
    .await
    .ok(200);
    // Server tokens are not paced: each request is 50 user.updated frames of about 5 KB for the follower, far
    // more than its socket and send queue hold over the storm.
    let requests = status_storm(&s, &ids, 4, 3).await;
    println!("{requests} requests of 50 updates");
    let (events, closed) = read_until_quiet(&mut follower).await;
    assert_eq!(
        closed,
        None,
        "the follower was closed after {} events",
        events.len()
    );
    let final_status = s.user_as(&Auth::Server, "u0").await["status"].clone();
    assert!(final_status.is_string(), "{final_status}");
    for id in &ids {
        let last = events
            .iter()
            .rev()
            .find(|e| is_type_of(e, event_type::USER_UPDATED, id))
            .unwrap_or_else(|| panic!("no user.updated about {id}"));
        assert_eq!(last["user"]["status"], final_status, "{id}");
        assert_eq!(
            s.user_as(&Auth::Server, id).await["status"],
            final_status,
            "{id}"
        );
    }
    // Still connected: the next change reaches it.
    s.partial_update(&Auth::Server, "u7", json!({ "status": "after" }), &[])
        .await
        .ok(200);
    let (events, closed) = read_until_quiet(&mut follower).await;
    assert_eq!(closed, None);
    assert!(
        events.iter().any(
            |e| is_type_of(e, event_type::USER_UPDATED, "u7") && e["user"]["status"] == "after"
        ),
        "{events:?}"
    );
}
