//! Negotiated batching (`/connect?batch_ms=N`): a connection that asks for it gets the events of each window of N
//! ms as one frame holding an array (or the event itself when the window gathered one), in order, after a first
//! frame (its `health.check`) that comes alone and at once; a connection that does not (the official SDKs) gets
//! one event per frame; a value out of range is refused.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const USERS: usize = 10;

/// Connects `watcher` (asking for `batch_ms` when given) following u0..u9, then brings u0..u9 online together;
/// returns the frames the watcher got about them within a second.
async fn storm(s: &Server, watcher: &str, batch_ms: Option<&str>) -> Vec<Value> {
    let ids: Vec<String> = (0..USERS).map(|i| format!("{watcher}-u{i}")).collect();
    let mut users: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    users.push(json!({ "id": watcher }));
    s.upsert(&users).await;
    let mut params =
        Server::connect_params(watcher, &json!({ "id": watcher }), &s.user_token(watcher));
    if let Some(ms) = batch_ms {
        params.push(("batch_ms".into(), ms.into()));
    }
    let mut w = s.open_ws(&params, watcher).await;
    let started = Instant::now();
    w.handshake().await;
    assert!(
        w.me().is_object(),
        "the first frame is the health.check itself, not a batch"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    s.subscribe_users(&w, &refs).await;
    let mut conns = Vec::new();
    for id in &ids {
        conns.push(s.connect(id).await);
    }
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match w.next(Duration::from_millis(100)).await {
            Some(Incoming::Json(frame)) => frames.push(frame),
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
    frames
}

/// The events of the frames, in order: a batch's in its order, a plain frame as itself.
fn events(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .flat_map(|f| match f {
            Value::Array(events) => events.clone(),
            event => vec![event.clone()],
        })
        .collect()
}

/// Who came online, in order (the watcher's own presence apart).
fn online_users(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "user.presence.changed" && e["user"]["online"] == true)
        .filter(|e| e["user"]["id"].as_str().is_some_and(|id| id.contains("-u")))
        .map(|e| e["user"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_batching_connection_gets_each_windows_events_as_one_frame_in_order() {
    let s = Server::start().await;
    let frames = storm(&s, "batcher", Some("40")).await;
    // A window holding several events sends an array; one that gathered a single event sends it as it is.
    assert!(
        frames
            .iter()
            .all(|f| f.as_array().is_some_and(|a| a.len() > 1) || f["type"].is_string()),
        "every frame after the first is a batch of several events or one event: {frames:?}"
    );
    assert!(frames.iter().any(Value::is_array), "{frames:?}");
    let events = events(&frames);
    let expected: Vec<String> = (0..USERS).map(|i| format!("batcher-u{i}")).collect();
    assert_eq!(online_users(&events), expected, "each user once, in order");
    assert!(
        frames.len() < events.len(),
        "{} events came in {} frames",
        events.len(),
        frames.len()
    );
}

#[tokio::test]
async fn without_batch_ms_every_event_is_a_frame_of_its_own() {
    let s = Server::start().await;
    for asked in [None, Some("0")] {
        let watcher = if asked.is_none() { "plain" } else { "zero" };
        let frames = storm(&s, watcher, asked).await;
        assert!(frames.iter().all(Value::is_object), "{frames:?}");
        let expected: Vec<String> = (0..USERS).map(|i| format!("{watcher}-u{i}")).collect();
        assert_eq!(online_users(&frames), expected);
    }
}

#[tokio::test]
async fn flips_that_undo_each_other_within_a_window_reach_a_batching_watcher_as_nothing() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "watcher" }), json!({ "id": "flipper" })])
        .await;
    let mut params = Server::connect_params(
        "watcher",
        &json!({ "id": "watcher" }),
        &s.user_token("watcher"),
    );
    params.push(("batch_ms".into(), "50".into()));
    let mut w = s.open_ws(&params, "watcher").await;
    w.handshake().await;
    s.subscribe_users(&w, &["flipper"]).await;
    let _flipper = s.connect("flipper").await;
    let presence_of = |frames: &[Value]| -> Vec<bool> {
        events(frames)
            .iter()
            .filter(|e| e["type"] == "user.presence.changed" && e["user"]["id"] == "flipper")
            .map(|e| e["user"]["online"].as_bool().unwrap())
            .collect()
    };
    let flip = |invisible: bool| {
        s.partial_update(
            &Auth::Server,
            "flipper",
            json!({ "invisible": invisible }),
            &[],
        )
    };
    assert_eq!(
        presence_of(&w.drain(Duration::from_millis(300)).await),
        [true]
    );
    // Invisible and back, twice, as fast as the API goes: inside one 50 ms window the flips cancel and the
    // watcher hears nothing. (A window boundary may fall between two flips: three tries; whatever is heard
    // then alternates and ends on the final state.)
    let mut heard = Vec::new();
    for _ in 0..3 {
        for invisible in [true, false, true, false] {
            flip(invisible).await.ok(200);
        }
        let presence = presence_of(&w.drain(Duration::from_millis(300)).await);
        assert!(
            presence.is_empty() || presence.last() == Some(&true),
            "ends on the final state: {presence:?}"
        );
        assert!(
            presence.windows(2).all(|p| p[0] != p[1]),
            "flips alternate: {presence:?}"
        );
        heard.push(presence.len());
    }
    assert!(
        heard.contains(&0),
        "four flips within a window read as no event at least once: {heard:?}"
    );
    // The control: a flip that stays is heard, once.
    flip(true).await.ok(200);
    assert_eq!(
        presence_of(&w.drain(Duration::from_millis(300)).await),
        [false]
    );
}

#[tokio::test]
async fn batch_ms_out_of_range_is_refused_with_code_4() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "alice" })]).await;
    for bad in ["51", "-1", "ten", "1.5"] {
        let mut params =
            Server::connect_params("alice", &json!({ "id": "alice" }), &s.user_token("alice"));
        params.push(("batch_ms".into(), bad.into()));
        let mut ws = s.open_ws(&params, "alice").await;
        let frame = match ws.next(WAIT).await {
            Some(Incoming::Json(v)) => v,
            other => panic!("{bad}: expected a connection.error, got {other:?}"),
        };
        assert_eq!(frame["type"], "connection.error", "{bad}: {frame}");
        assert_eq!(frame["error"]["code"], 4, "{bad}: {frame}");
        assert!(
            frame["error"]["message"]
                .as_str()
                .unwrap()
                .contains("batch_ms"),
            "{frame}"
        );
    }
}
