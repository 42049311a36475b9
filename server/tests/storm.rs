//! A presence storm on one large channel: a watcher asking for batches (`batch_ms=10`) watches, with presence, a
//! channel of 10,000 members (grown with `add_members`, 100 a request), and every member comes online as fast as
//! the test can connect them. The watcher keeps up (no 4003, still answering at the end), hears every member come
//! online, and hears it in batches: far fewer frames than events.
//!
//! The server runs as its own process (the binary), so that its 10,000 sockets and the test's 10,000 are not
//! counted against one process's open files.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures_util::stream::{self, StreamExt};
use presence_protocol::codes::event_type;
use serde_json::{json, Value};

const MEMBERS: usize = 10_000;
/// Connects in flight at once.
const CONCURRENCY: usize = 64;

/// The events a frame holds: a batch's, in order, or the frame itself.
fn events_of(frame: &Value) -> Vec<&Value> {
    match frame {
        Value::Array(events) => events.iter().collect(),
        event => vec![event],
    }
}

/// What the watcher read during the storm.
struct Heard {
    frames: usize,
    events: usize,
    /// Member id → the `online` of the last presence event about them.
    last_presence: HashMap<String, bool>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_members_come_online_and_a_batching_watcher_keeps_up() {
    // Members' sockets are read (their reader tasks answer the server's pings), but no test client sends frames
    // of its own: client silence is off so that a slow debug run is not cut short by it.
    let s = Server::binary(ServerOpts::default().arg("--client-silence-ms", 0)).await;
    let ids: Vec<String> = (0..MEMBERS).map(|i| format!("storm-{i:05}")).collect();
    let started = Instant::now();
    let mut users: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    users.push(json!({ "id": "watcher" }));
    stream::iter(users.chunks(100))
        .for_each_concurrent(4, |chunk| async {
            s.upsert(chunk).await;
        })
        .await;
    s.create_channel("messaging", "storm", &["watcher"], json!({}))
        .await;
    let s = &s;
    stream::iter(ids.chunks(100))
        .for_each_concurrent(4, |chunk| async move {
            s.update_channel(
                &Auth::Server,
                "messaging",
                "storm",
                json!({ "add_members": chunk }),
            )
            .await
            .ok(201);
        })
        .await;
    let built = started.elapsed();

    let mut params = Server::connect_params(
        "watcher",
        &json!({ "id": "watcher" }),
        &s.user_token("watcher"),
    );
    params.push(("batch_ms".into(), "10".into()));
    let mut watcher = s.open_ws(&params, "watcher").await;
    watcher.handshake().await;
    let state = s.watch(&watcher, "messaging", "storm", true).await;
    assert_eq!(state["channel"]["member_count"], MEMBERS + 1);
    watcher.drain(ms(300)).await;

    // The watcher is read on a task of its own while the members connect, until it has heard every member online
    // or 30 s after the last member connected.
    let (all_connected, mut connected_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut heard = Heard {
            frames: 0,
            events: 0,
            last_presence: HashMap::new(),
        };
        let online = |heard: &Heard| heard.last_presence.values().filter(|on| **on).count();
        let mut deadline = Instant::now() + Duration::from_secs(600);
        while online(&heard) < MEMBERS && Instant::now() < deadline {
            if connected_rx.try_recv().is_ok() {
                deadline = Instant::now() + Duration::from_secs(30);
            }
            match watcher.next(Duration::from_secs(1)).await {
                Some(Incoming::Json(frame)) => {
                    heard.frames += 1;
                    for event in events_of(&frame) {
                        heard.events += 1;
                        if event["type"] == event_type::USER_PRESENCE_CHANGED {
                            let id = event["user"]["id"].as_str().unwrap_or_default();
                            let on = event["user"]["online"] == true;
                            heard.last_presence.insert(id.to_string(), on);
                        }
                    }
                }
                None => {}
                Some(other) => panic!(
                    "the watcher's connection ended during the storm after {} frames: {other:?}",
                    heard.frames
                ),
            }
        }
        (watcher, heard)
    });

    let storm = Instant::now();
    let members: Vec<Ws> = stream::iter(&ids)
        .map(|id| s.connect(id))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let connected = storm.elapsed();
    let _ = all_connected.send(());
    let (mut watcher, heard) = reader.await.expect("the watcher's reader");
    let all_heard = storm.elapsed();

    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| heard.last_presence.get(*id) != Some(&true))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {MEMBERS} members never read online by the watcher, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        heard.frames * 5 <= heard.events,
        "{} events came in {} frames: batching should gather several events a frame",
        heard.events,
        heard.frames
    );
    // Still open and answering: no slow-consumer close, nothing queued beyond what it read.
    let ping = json!([{ "type": "health.check", "client_id": "watcher--storm" }]);
    watcher.send_json(&ping).await;
    watcher
        .wait_for("the answer to a health.check", WAIT, |frame| {
            events_of(frame)
                .iter()
                .any(|e| e["type"] == event_type::HEALTH_CHECK)
        })
        .await;
    // No member was closed meanwhile (their reader tasks answer the server's pings: no 4002).
    assert_eq!(
        s.metric("presence_online_users").await,
        (MEMBERS + 1) as f64
    );
    assert_eq!(
        s.metric("presence_open_connections").await,
        (MEMBERS + 1) as f64
    );
    println!(
        "storm: built {MEMBERS} members in {built:.1?}; connected them in {connected:.1?} ({:.0} connects/s); \
         the watcher read them all online after {all_heard:.1?}: {} events in {} frames",
        MEMBERS as f64 / connected.as_secs_f64(),
        heard.events,
        heard.frames
    );
    assert_eq!(members.len(), MEMBERS);
}
