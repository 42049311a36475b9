//! The realtime connection: first frame, `user_details` on connect, keep-alive in both directions, frames the
//! server refuses, shutdown. The connection cap and slow consumers are in `connections.rs`.

mod common;

use std::time::Instant;

use common::*;
use presence_protocol::codes::{close_code, event_type};
use presence_protocol::Event;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn first_frame_is_a_complete_health_check() {
    let s = Server::start().await;
    let before = now();
    let ws = s
        .connect_with(
            "alice",
            json!({ "id": "alice", "name": "Alice Smith", "image": "http://img/a", "status": "busy", "color": "red" }),
        )
        .await;
    let first = &ws.first;
    let ev: Event = serde_json::from_value(first.clone()).expect("Event shape");
    assert_eq!(ev.kind, event_type::HEALTH_CHECK);
    assert_eq!(first["cid"], "*");
    time(&first["created_at"]);
    let me = ws.me();
    assert_own_user(me, "alice");
    assert_eq!(me["online"], true);
    assert_eq!(me["invisible"], false);
    assert_eq!(
        me["name"], "Alice Smith",
        "the json parameter is form-decoded (`+` is a space)"
    );
    assert_eq!(me["image"], "http://img/a");
    assert_eq!(me["status"], "busy", "custom fields flat in me: {me}");
    assert_eq!(me["color"], "red");
    assert_eq!(me["role"], "user");
    assert_eq!(me["mutes"], json!([]));
    assert_eq!(me["channel_mutes"], json!([]));
    let last_active = time(&me["last_active"]);
    assert!(
        last_active >= before - chrono::Duration::seconds(1)
            && last_active <= now() + chrono::Duration::seconds(1),
        "last_active {last_active} is not the connect time"
    );

    // Every connection has its own id.
    let ws2 = s.connect("alice").await;
    assert_ne!(ws.connection_id, ws2.connection_id);
}

#[tokio::test]
async fn user_details_are_a_partial_update() {
    let s = Server::start().await;
    let ws = s
        .connect_with(
            "alice",
            json!({ "id": "alice", "name": "Alice", "status": "busy", "color": "red" }),
        )
        .await;
    ws.close(1000).await;
    // Absent fields keep their stored values.
    let ws = s.connect("alice").await;
    assert_eq!(ws.me()["name"], "Alice");
    assert_eq!(ws.me()["status"], "busy");
    ws.close(1000).await;
    // Supplied ones change, the rest stays.
    let ws = s
        .connect_with("alice", json!({ "id": "alice", "status": "away" }))
        .await;
    assert_eq!(ws.me()["status"], "away");
    assert_eq!(ws.me()["color"], "red");
    let stored = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(stored["status"], "away");
    assert_eq!(stored["color"], "red");
    assert_eq!(stored["name"], "Alice");
    // Unknown keys in the json payload are ignored.
    let mut params =
        Server::connect_params("alice", &json!({ "id": "alice" }), &s.user_token("alice"));
    for (k, v) in params.iter_mut() {
        if k == "json" {
            let mut payload: serde_json::Value = serde_json::from_str(v).unwrap();
            payload["server_determines_connection_id"] = json!(true);
            payload["user_token"] = json!("legacy");
            payload["products"] = json!(["chat"]);
            *v = payload.to_string();
        }
    }
    let mut ws = s.open_ws(&params, "alice").await;
    ws.handshake().await;
}

#[tokio::test]
async fn health_check_pings_are_answered_and_refresh_last_active() {
    let s = Server::start().await;
    let mut ws = s.connect("alice").await;
    let first_seen = time(&ws.me()["last_active"]);
    sleep_ms(1100).await;
    let reply = ws.health_ping().await;
    assert_eq!(reply["type"], event_type::HEALTH_CHECK);
    assert_eq!(reply["connection_id"], ws.connection_id.as_str(), "{reply}");
    assert_own_user(&reply["me"], "alice");
    let refreshed = time(&reply["me"]["last_active"]);
    assert!(
        refreshed >= first_seen + chrono::Duration::milliseconds(1000),
        "a ping refreshes last_active: {first_seen} -> {refreshed}"
    );
    let stored = time(&s.user_as(&Auth::Server, "alice").await["last_active"]);
    assert!(
        stored >= refreshed - chrono::Duration::milliseconds(5),
        "stored last_active {stored} < {refreshed}"
    );
    // Every ping gets its own answer.
    for _ in 0..3 {
        let r = ws.health_ping().await;
        assert_eq!(r["connection_id"], ws.connection_id.as_str());
    }
}

#[tokio::test]
async fn server_pings_and_keeps_responsive_clients() {
    let s = Server::start_with(ServerOpts::default().ping(200, 800)).await;
    let mut ws = s.connect("alice").await;
    // Read (and so answer pings) for well over the pong timeout: the connection stays open (`collect` panics if
    // it ends) and, with nothing subscribed, carries only the server's Ping frames besides its own online event.
    let got = ws.collect(ms(2500), |v| !is_presence_of(v, "alice")).await;
    assert!(
        got.is_empty(),
        "an idle connection got events besides Pings: {got:?}"
    );
    assert!(
        ws.pings >= 5,
        "expected WebSocket Ping frames every 200 ms, got {} in 2.5 s",
        ws.pings
    );
    let r = ws.health_ping().await;
    assert_eq!(r["connection_id"], ws.connection_id.as_str());
    assert_eq!(s.metric("presence_open_connections").await, 1.0);
}

#[tokio::test]
async fn frozen_client_is_dropped_after_pong_timeout_and_goes_offline() {
    let (ping, pong, grace) = (200, 1000, 500);
    let s = Server::start_with(ServerOpts::default().ping(ping, pong).grace(grace)).await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    // A client that completed the handshake and then never answers a Ping.
    let (mut alice, _) = RawWs::connect(&s, "alice").await;
    let frozen_at = Instant::now();
    bob.wait_presence("alice", true, WAIT).await;
    let ev = bob
        .wait_presence("alice", false, ms(ping + pong + grace + 4000))
        .await;
    let elapsed = frozen_at.elapsed().as_millis() as u64;
    assert!(
        elapsed >= pong + grace - 100,
        "offline after {elapsed} ms: expected the pong timeout ({pong} ms) plus the grace window ({grace} ms) first"
    );
    assert!(
        elapsed <= ping + pong + grace + 2500,
        "offline only after {elapsed} ms (ping {ping}, pong timeout {pong}, grace {grace})"
    );
    time(&ev["user"]["last_active"]);
    let frames = alice.read_to_end(WAIT).await;
    let pings = frames.iter().filter(|f| f.opcode == 9).count();
    assert!(
        pings >= 2,
        "expected the server's Ping frames before the timeout, got {frames:?}"
    );
    let close = frames.iter().find(|f| f.opcode == 8);
    assert_eq!(
        close.and_then(|f| f.close_code()),
        Some(close_code::PONG_TIMEOUT),
        "a silent connection is closed with 4002; frames: {:?}",
        frames.iter().map(|f| f.opcode).collect::<Vec<_>>()
    );
    s.wait_metric("presence_open_connections", 1.0).await;
    assert!(s.user_ids(json!({ "online": true })).await == strs(&["bob"]));
}

/// User data is capped at 5 KB, so large volumes of events come from many users: `alice` and 99 others whose
/// presence `conn` (alice's connection) follows, each update of all of them queues 100 `user.updated` frames of
/// about 5 KB on it. Returns their ids.
async fn followed_by(s: &Server, conn: &str) -> Vec<String> {
    let mut ids = vec!["alice".to_string()];
    ids.extend((1..100).map(|i| format!("peer{i:02}")));
    let users: Vec<_> = ids.iter().map(|id| json!({ "id": id })).collect();
    s.upsert(&users[1..]).await;
    s.query_users(
        &Auth::Server,
        Some(conn),
        json!({ "filter_conditions": { "id": { "$in": ids } }, "presence": true, "limit": 100 }),
    )
    .await
    .ok(200);
    ids
}

/// One `PATCH /users` giving every user in `ids` a new status of nearly 5 KB that starts with `i`.
async fn update_all(s: &Server, ids: &[String], i: usize) -> Resp {
    let status = format!("{i}{}", "u".repeat(5000));
    let users: Vec<_> = ids
        .iter()
        .map(|id| json!({ "id": id, "set": { "status": status } }))
        .collect();
    s.patch("/users")
        .auth(&Auth::Server)
        .json(json!({ "users": users }))
        .send()
        .await
}

#[tokio::test]
async fn frozen_client_with_a_full_socket_buffer_still_times_out() {
    // A pong timeout long enough for the buffers to fill first even on a loaded machine.
    let (ping, pong, grace) = (500, 20_000, 300);
    let s = Server::start_with(
        ServerOpts::default()
            .ping(ping, pong)
            .grace(grace)
            // A send queue bound far above the traffic: only the pong timeout may end the connection.
            .arg("--send-queue-bytes", 64 * 1024 * 1024),
    )
    .await;
    let (mut alice, first) = RawWs::connect_with_recv_buffer(&s, "alice", Some(16 * 1024)).await;
    let frozen_at = Instant::now();
    assert_eq!(s.user_as(&Auth::Server, "alice").await["online"], true);
    let ids = followed_by(&s, first["connection_id"].as_str().unwrap()).await;
    // Events keep coming for the frozen tab until the socket buffers between it and the server are full
    // (~8 MB against a 16 KiB receive window and at most 4 MiB of send buffer), with fewer bytes than the
    // send-queue bound set here, and before the pong timeout.
    let batches = 16;
    for i in 0..batches {
        update_all(&s, &ids, i).await.ok(200);
    }
    let updates = batches * ids.len();
    let filled = frozen_at.elapsed().as_millis();
    assert!(
        filled < pong as u128,
        "filling the buffers took {filled} ms, past the pong timeout"
    );
    let deadline = Instant::now() + ms(pong + grace + 5000);
    loop {
        let u = s
            .query_users(
                &Auth::Server,
                None,
                json!({ "filter_conditions": { "id": "alice", "online": true } }),
            )
            .await;
        if u.ok(200)["users"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a silent client whose socket buffers are full is still online {} ms after it froze \
             (pong timeout {pong} ms, grace {grace} ms)",
            frozen_at.elapsed().as_millis()
        );
        sleep_ms(100).await;
    }
    let elapsed = frozen_at.elapsed().as_millis();
    assert!(
        elapsed >= (pong + grace) as u128 - 100,
        "offline after {elapsed} ms"
    );
    // The buffers really were full: of the user.updated frames queued for the frozen tab, the server could not
    // write them all before it gave up on the connection, so some never reach it even once it reads again.
    let frames = alice.read_to_end(WAIT).await;
    let delivered = frames
        .iter()
        .filter_map(RawFrame::json)
        .filter(|v| v["type"] == event_type::USER_UPDATED)
        .count();
    assert!(
        delivered < updates,
        "all {updates} updates reached the frozen client after all ({delivered} delivered): its socket \
         buffers were never full"
    );
}

async fn expect_bad_frame_close(s: &Server, msg: Message, what: &str) {
    let mut ws = s.connect("alice").await;
    ws.send(msg).await;
    let closed = ws.wait_closed(WAIT).await;
    assert_eq!(
        closed,
        Closed::Frame(Some(close_code::BAD_FRAME)),
        "{what}: expected close 4004"
    );
}

#[tokio::test]
async fn refused_frames_close_with_4004() {
    let s = Server::start().await;
    expect_bad_frame_close(&s, Message::text("this is not json"), "non-JSON text").await;
    expect_bad_frame_close(&s, Message::binary(vec![1u8, 2, 3]), "binary frame").await;
    // A frame over 64 KiB is too big rather than refused for what it says: close 1009.
    let huge = json!([{ "type": "health.check", "client_id": "x".repeat(70 * 1024) }]).to_string();
    let mut ws = s.connect("alice").await;
    ws.send(Message::text(huge)).await;
    assert_eq!(
        ws.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::MESSAGE_TOO_BIG)),
        "frame over 64 KiB"
    );
    // A large frame under the limit is fine.
    let mut ws = s.connect("alice").await;
    let big = json!([{ "type": "health.check", "client_id": "y".repeat(32 * 1024) }]).to_string();
    ws.send_text(&big).await;
    let reply = ws.wait_type(event_type::HEALTH_CHECK, WAIT).await;
    assert_eq!(reply["connection_id"], ws.connection_id.as_str());
    // The server survived all of it.
    let health = s.get("/healthz").no_api_key().send().await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (200, "ok\n"),
        "GET /healthz after refused frames"
    );
    assert_eq!(s.metric("presence_open_connections").await, 1.0);
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code() {
    // Browsers report a close the server never answered as 1006 (not clean), whatever code the page sent.
    let s = Server::start().await;
    for code in [close_code::NORMAL, 4001] {
        let mut ws = s.connect("alice").await;
        ws.send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: code.into(),
                reason: "".into(),
            },
        )))
        .await;
        assert_eq!(
            ws.wait_closed(WAIT).await,
            Closed::Frame(Some(code)),
            "the server echoes close {code}"
        );
    }
}

#[tokio::test]
async fn sigterm_closes_live_sockets_with_1001() {
    let mut s = Server::binary(ServerOpts::default()).await;
    let mut ws = s.connect("alice").await;
    let status = s.terminate().await;
    assert!(status.success(), "graceful shutdown exit status {status:?}");
    // 1001 (going away), not 1000: the SDK reconnects after 1001 and would give up after 1000.
    assert_eq!(
        ws.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::GOING_AWAY)),
        "a live socket is closed with 1001 on shutdown"
    );
}
