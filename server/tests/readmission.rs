//! Readmission after a restart: a server started on a database whose users were recently connected lets their
//! crowd back at a pace (429, code 9, `Retry-After`, before the upgrade), so that everyone is back within about
//! the window and no moment takes the whole crowd; a small crowd and a fresh database are never paced.

mod common;

use std::time::Instant;

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use presence_protocol::codes::error_code;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Users of the crowd: more than the 50 a second that come back unpaced over the window below.
const CROWD: usize = 150;
const WINDOW_MS: u64 = 2_000;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connect attempt of `user`: the accepted socket (its first frame a `health.check`), or the refusal's
/// status, `Retry-After` and body.
async fn attempt(s: &Server, user: &str) -> Result<Socket, (u16, Option<String>, Value)> {
    let params = Server::connect_params(user, &json!({ "id": user }), &s.user_token(user));
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = s.ws_url(&params);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((mut stream, _)) => {
            let first = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{user}: no first frame"));
            let Some(Ok(Message::Text(text))) = first else {
                panic!("{user}: the first frame is {first:?}");
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["type"], "health.check", "{user}: {frame}");
            Ok(stream)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), retry_after, body))
        }
        Err(e) => panic!("{user}: the upgrade failed without an HTTP answer: {e}"),
    }
}

/// 150 over 2 s is 75 a second, and the bucket holds a tenth of that: at most this many are in by now.
fn assert_within_pace(admitted: usize, started: Instant) {
    let rate = CROWD as f64 / (WINDOW_MS as f64 / 1000.0);
    let most = 1.0 + rate / 10.0 + rate * started.elapsed().as_secs_f64();
    assert!(
        admitted as f64 <= most,
        "{admitted} let in after {:?}, above the pace ({most:.0})",
        started.elapsed()
    );
}

fn crowd() -> Vec<String> {
    (0..CROWD).map(|i| format!("returning-{i}")).collect()
}

async fn stop_after_connecting_everyone(opts: &ServerOpts, users: &[String]) {
    let mut s = Server::binary(opts.clone()).await;
    let sockets = join_all(users.iter().map(|u| s.connect(u))).await;
    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exit status {status:?}");
    drop(sockets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_readmits_its_crowd_at_a_pace() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default().db(dir.path().join("presence.db"));
    opts.env
        .push(("PRESENCE_READMIT_WINDOW_MS".into(), WINDOW_MS.to_string()));
    let users = crowd();
    stop_after_connecting_everyone(&opts, &users).await;

    let s = Server::binary(opts).await;
    let started = Instant::now();
    // Everyone comes back at once.
    let first = join_all(users.iter().map(|u| attempt(&s, u))).await;
    let mut waiting = Vec::new();
    let mut back = Vec::new();
    for (user, outcome) in users.iter().zip(first) {
        match outcome {
            Ok(ws) => back.push(ws),
            Err((status, retry_after, body)) => {
                assert_eq!(status, 429, "{user}: {body}");
                assert_eq!(body["code"], error_code::RATE_LIMIT, "{user}: {body}");
                assert_eq!(body["StatusCode"], 429, "{user}: {body}");
                assert_eq!(retry_after.as_deref(), Some("1"), "{user}");
                waiting.push(user.clone());
            }
        }
    }
    assert!(!back.is_empty(), "nobody was let in");
    assert_within_pace(back.len(), started);
    assert!(!waiting.is_empty(), "nobody was refused");
    assert_eq!(
        s.metric("presence_paced_connects_total").await,
        waiting.len() as f64
    );
    // Retrying, the others are let in at the pace: within about the window, not at once.
    let deadline = started + std::time::Duration::from_millis(4 * WINDOW_MS);
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} still refused after {:?}",
            waiting.len(),
            started.elapsed()
        );
        sleep_ms(100).await;
        let outcomes = join_all(waiting.iter().map(|u| attempt(&s, u))).await;
        let mut still = Vec::new();
        for (user, outcome) in waiting.iter().zip(outcomes) {
            match outcome {
                Ok(ws) => back.push(ws),
                Err((429, _, _)) => still.push(user.clone()),
                Err(other) => panic!("{user}: {other:?}"),
            }
        }
        waiting = still;
        assert_within_pace(back.len(), started);
    }
    let took = started.elapsed();
    assert_eq!(back.len(), CROWD);
    assert!(
        took >= std::time::Duration::from_millis(WINDOW_MS * 3 / 4),
        "the crowd was back after {took:?}: not spread"
    );
    // Once the crowd is in, connects are no longer paced.
    let refused = s.metric("presence_paced_connects_total").await;
    let late: Vec<String> = (0..50).map(|i| format!("late-{i}")).collect();
    let late = join_all(late.iter().map(|u| attempt(&s, u))).await;
    assert!(
        late.iter().all(Result::is_ok),
        "paced after the crowd was in"
    );
    assert_eq!(s.metric("presence_paced_connects_total").await, refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_and_a_small_crowd_are_not_paced() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default().db(dir.path().join("presence.db"));
    // 150 users over 4 s is under 50 a second.
    opts.env.push((
        "PRESENCE_READMIT_WINDOW_MS".into(),
        (2 * WINDOW_MS).to_string(),
    ));
    let mut s = Server::binary(opts.clone()).await;
    let users = crowd();
    let first = join_all(users.iter().map(|u| attempt(&s, u))).await;
    assert!(first.iter().all(Result::is_ok), "a fresh database paced");
    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exit status {status:?}");
    drop(first);

    let s = Server::binary(opts).await;
    let again = join_all(users.iter().map(|u| attempt(&s, u))).await;
    assert!(again.iter().all(Result::is_ok), "a small crowd paced");
    assert_eq!(s.metric("presence_paced_connects_total").await, 0.0);
}

/// A connect with a wrong `api_key`: the server's answer, a refusal before the upgrade (status and body) or the
/// `connection.error` frame after it.
async fn junk_attempt(s: &Server, user: &str) -> Result<Value, (u16, Value)> {
    let mut params = Server::connect_params(user, &json!({ "id": user }), &s.user_token(user));
    for (k, v) in params.iter_mut() {
        if k == "api_key" {
            *v = "not-the-key".into();
        }
    }
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = s.ws_url(&params);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((mut stream, _)) => {
            let first = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{user}: no first frame"));
            let Some(Ok(Message::Text(text))) = first else {
                panic!("{user}: the first frame is {first:?}");
            };
            Ok(serde_json::from_str(&text).unwrap())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("{user}: the upgrade failed without an HTTP answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_connects_neither_spend_the_pace_nor_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default().db(dir.path().join("presence.db"));
    opts.env
        .push(("PRESENCE_READMIT_WINDOW_MS".into(), WINDOW_MS.to_string()));
    let users = crowd();
    stop_after_connecting_everyone(&opts, &users).await;

    let s = Server::start_with(opts).await;
    // More junk than the crowd itself, before anyone returns: each one is refused for its key, not paced.
    let junk: Vec<String> = (0..2 * CROWD).map(|i| format!("junk-{i}")).collect();
    let answers = join_all(junk.iter().map(|u| junk_attempt(&s, u))).await;
    for (user, answer) in junk.iter().zip(answers) {
        let frame = answer.unwrap_or_else(|e| panic!("{user}: refused before the upgrade: {e:?}"));
        assert_eq!(frame["type"], "connection.error", "{user}: {frame}");
        assert_eq!(
            frame["error"]["code"],
            error_code::ACCESS_KEY,
            "{user}: {frame}"
        );
    }
    assert_eq!(s.metric("presence_paced_connects_total").await, 0.0);
    // The crowd still finds the whole budget, and the pacing still on: only the bucket's few get in at once.
    let started = Instant::now();
    let first = join_all(users.iter().map(|u| attempt(&s, u))).await;
    let back = first.iter().filter(|o| o.is_ok()).count();
    assert!(back > 0, "nobody was let in");
    assert!(
        back < CROWD,
        "the junk ended the pacing: everyone was let in"
    );
    assert_within_pace(back, started);
}
