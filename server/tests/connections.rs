//! What the server does when connections pile up: at the per-user connection cap a new connection replaces a
//! dead one (closed with 4002) or is refused with code 71 and a close the clients retry on; a consumer that
//! stops reading is closed with 4003 once its queued frames pass the send queue's byte bound; a client that
//! sends nothing of its own (a frozen tab, whose browser still answers pings) is closed with 4005.

mod common;

use std::time::Instant;

use common::*;
use presence_protocol::codes::{close_code, error_code, event_type};
use serde_json::json;

/// Ping interval of the cap tests: short, so that a silent connection misses a pong quickly.
const PING_MS: u64 = 200;
/// Pong timeout of the cap tests: far away, so that only a new connection can end a dead one.
const PONG_MS: u64 = 60_000;

async fn capped_server(cap: u32, grace_ms: u64) -> Server {
    Server::start_with(
        ServerOpts::default()
            .ping(PING_MS, PONG_MS)
            .grace(grace_ms)
            .arg("--max-connections-per-user", cap),
    )
    .await
}

/// The close code a raw client finds at the end of what the server sent it.
async fn close_code_of(ws: &mut RawWs, what: &str) -> Option<u16> {
    let frames = ws.read_to_end(WAIT).await;
    let code = frames
        .iter()
        .find(|f| f.opcode == 8)
        .and_then(RawFrame::close_code);
    assert!(
        frames.iter().any(|f| f.opcode == 9),
        "{what}: the server never pinged it: {frames:?}"
    );
    code
}

/// Opens a connection expected to be refused and returns its error frame and close code.
#[tokio::test]
async fn at_the_cap_a_new_connection_replaces_the_oldest_one_that_missed_a_pong() {
    let s = capped_server(2, 1000).await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    // Two connections of alice whose sockets stay open but never answer a ping.
    let (mut oldest, _) = RawWs::connect(&s, "alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    let (mut newer, _) = RawWs::connect(&s, "alice").await;
    s.wait_metric("presence_open_connections", 3.0).await;
    // Past the first ping plus one ping interval, both have missed a pong.
    sleep_ms(3 * PING_MS).await;

    let mut fresh = s.connect("alice").await;
    assert_eq!(
        close_code_of(&mut oldest, "the oldest dead connection").await,
        Some(close_code::PONG_TIMEOUT),
        "the oldest connection that missed a pong gives way with 4002"
    );
    // Only one gave way: bob, the newer dead one and the new one are open.
    s.wait_metric("presence_open_connections", 3.0).await;

    // A connection that answers pings keeps its place: the next one replaces the other dead one.
    sleep_ms(3 * PING_MS).await;
    let mut again = s.connect("alice").await;
    assert_eq!(
        close_code_of(&mut newer, "the newer dead connection").await,
        Some(close_code::PONG_TIMEOUT)
    );
    fresh
        .expect_none("a close of a live connection", QUIET, |_| false)
        .await;
    again
        .expect_none("a close of a live connection", QUIET, |_| false)
        .await;
    s.wait_metric("presence_open_connections", 3.0).await;

    // alice never looked offline to bob.
    bob.expect_no_presence("alice", QUIET).await;
    assert_eq!(s.user_as(&Auth::Server, "alice").await["online"], true);
}

#[tokio::test]
async fn reconnecting_over_a_dead_socket_at_a_cap_of_one_shows_peers_no_flap() {
    // Without a grace window, any moment with no connection would show alice offline.
    let s = capped_server(1, 0).await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    // alice's network dropped without a FIN: the server still holds her socket.
    let (mut dead, _) = RawWs::connect(&s, "alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    sleep_ms(3 * PING_MS).await;

    let back = s.connect("alice").await;
    assert_eq!(back.me()["online"], true);
    assert_eq!(
        close_code_of(&mut dead, "the dead connection").await,
        Some(close_code::PONG_TIMEOUT)
    );
    bob.expect_no_presence("alice", QUIET).await;
    s.wait_metric("presence_open_connections", 2.0).await;
}

#[tokio::test]
async fn at_the_cap_with_every_connection_answering_pings_a_new_one_is_refused_with_71_and_close_1013(
) {
    let s = capped_server(2, 1000).await;
    let mut first = s.connect("alice").await;
    let mut second = s.connect("alice").await;
    // Other users are not affected by alice's count.
    let _bob = s.connect("bob").await;
    // Long enough for a connection that did not answer pings to have missed one.
    sleep_ms(3 * PING_MS).await;

    let (frame, mut refused) = s.refused_connect("alice", &json!({ "id": "alice" })).await;
    let closed = refused.wait_closed(WAIT).await;
    assert_eq!(
        frame["error"]["code"],
        error_code::TOO_MANY_CONNECTIONS,
        "{frame}"
    );
    assert_eq!(frame["error"]["StatusCode"], 429, "{frame}");
    // Not 1000: on 1000 during a handshake the SDK gives up for good; on 1013 it retries with backoff.
    assert_eq!(closed, Closed::Frame(Some(close_code::TRY_AGAIN_LATER)));

    // The live connections were not touched.
    first.expect_none("a close", QUIET, |_| false).await;
    second.expect_none("a close", QUIET, |_| false).await;
    assert!(
        first.pings > 0 && second.pings > 0,
        "the server pinged them"
    );
    s.wait_metric("presence_open_connections", 3.0).await;

    // A freed slot can be taken again.
    first.close(1000).await;
    s.wait_metric("presence_open_connections", 2.0).await;
    let again = s.connect("alice").await;
    assert_eq!(again.me()["id"], "alice");
}

/// A status value of fixed length (about 3 KB: under the custom data cap) that differs per update.
fn status(i: usize) -> String {
    format!("{i:06}{}", "q".repeat(3000))
}

/// The lengths of the `user.updated` frames among `frames`.
fn updates(frames: &[RawFrame]) -> Vec<usize> {
    frames
        .iter()
        .filter(|f| {
            f.json()
                .is_some_and(|v| v["type"] == event_type::USER_UPDATED)
        })
        .map(|f| f.payload.len())
        .collect()
}

/// A server whose send queues hold at most `bound` bytes, keep-alive out of the way (only the send queue can
/// end a connection), with a frozen client of alice (small receive window, reads nothing).
async fn frozen_alice(bound: usize) -> (Server, RawWs) {
    let s = Server::start_with(
        ServerOpts::default()
            .ping(60_000, 120_000)
            .arg("--send-queue-bytes", bound),
    )
    .await;
    let (alice, _) = RawWs::connect_with_recv_buffer(&s, "alice", Some(16 * 1024)).await;
    s.wait_metric("presence_open_connections", 1.0).await;
    (s, alice)
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_closed_with_4003_once_its_queue_passes_the_byte_bound() {
    const BOUND: usize = 64 * 1024;
    let (small, mut alice) = frozen_alice(BOUND).await;
    // The same traffic goes to a server with a bound far above it.
    let (large, mut alice_large) = frozen_alice(64 * 1024 * 1024).await;
    let started = Instant::now();
    // Enough to fill the socket buffers between server and client (a few MB) and then the queue.
    let mut sent = 0;
    let mut closed = false;
    while sent < 4000 && !closed {
        let set = json!({ "status": status(sent) });
        let (a, b) = tokio::join!(
            small.partial_update(&Auth::Server, "alice", set.clone(), &[]),
            large.partial_update(&Auth::Server, "alice", set, &[]),
        );
        a.ok(200);
        b.ok(200);
        sent += 1;
        closed = small.metric("presence_open_connections").await == 0.0;
    }
    assert!(
        closed,
        "a connection that read nothing while {sent} updates of ~3 KB were sent to it is still open"
    );
    // Reading again drains the socket buffers; the close frame comes after the frames already written.
    let frames = alice.read_to_end(ms(30_000)).await;
    let close = frames.iter().find(|f| f.opcode == 8);
    assert_eq!(
        close.and_then(RawFrame::close_code),
        Some(close_code::SLOW_CONSUMER),
        "a slow consumer is closed with 4003; got {} frames, close frame {close:?}",
        frames.len()
    );
    // What never arrived is what sat in the queue when the next frame would have passed the bound (plus
    // that frame, and any sent before the test noticed the close).
    let delivered = updates(&frames);
    let frame_len = *delivered.iter().max().expect("some updates arrived");
    let lost = (sent - delivered.len()) * frame_len;
    assert!(
        lost >= BOUND - 2 * frame_len && lost <= BOUND + 10 * frame_len,
        "closed with {lost} bytes of {frame_len}-byte frames undelivered ({sent} sent, {} delivered, in {} ms); \
         expected about the {BOUND}-byte bound",
        delivered.len(),
        started.elapsed().as_millis()
    );

    // With the large bound the connection stays, and every update arrives once it reads.
    assert_eq!(large.metric("presence_open_connections").await, 1.0);
    let mut got = 0;
    while got < sent {
        let frame = alice_large
            .read_frame(ms(30_000))
            .await
            .unwrap_or_else(|| panic!("the connection ended after {got} of {sent} updates"));
        assert_ne!(
            frame.opcode, 8,
            "closed after {got} of {sent} updates: {frame:?}"
        );
        got += updates(std::slice::from_ref(&frame)).len();
    }
    assert_eq!(large.metric("presence_open_connections").await, 1.0);
}

#[tokio::test]
async fn a_single_frame_larger_than_the_send_queue_bound_closes_even_an_empty_queue_with_4003() {
    const BOUND: usize = 4096;
    let s = Server::start_with(
        ServerOpts::default()
            .ping(60_000, 120_000)
            .arg("--send-queue-bytes", BOUND),
    )
    .await;
    s.upsert(&[json!({ "id": "alice" })]).await;
    // A client that reads everything at once: its queue is empty whenever the server queues a frame.
    let mut alice = s.connect("alice").await;
    alice.drain(ms(200)).await;

    // Well under the bound: delivered, the connection stays.
    let small = "s".repeat(BOUND / 4);
    s.partial_update(&Auth::Server, "alice", json!({ "status": small }), &[])
        .await
        .ok(200);
    let ev = alice
        .wait_for("user.updated with the small status", WAIT, |v| {
            is_type_of(v, event_type::USER_UPDATED, "alice")
        })
        .await;
    assert_eq!(ev["user"]["status"], small.as_str());
    assert!(ev.to_string().len() < BOUND);

    // One frame over the bound on its own: the connection is closed as a slow consumer, the frame never sent.
    let large = "l".repeat(BOUND + 1);
    s.partial_update(&Auth::Server, "alice", json!({ "status": large }), &[])
        .await
        .ok(200);
    let mut updates = Vec::new();
    let code = loop {
        match alice.next(WAIT).await {
            Some(Incoming::Json(v)) => updates.push(v),
            Some(Incoming::Close(code, _)) => break code,
            other => panic!(
                "expected close 4003 after the oversized frame, got {other:?}; events: {updates:?}"
            ),
        }
    };
    assert_eq!(
        code,
        Some(close_code::SLOW_CONSUMER),
        "events before the close: {updates:?}"
    );
    assert!(
        updates
            .iter()
            .all(|v| v["user"]["status"] != large.as_str()),
        "the frame over the bound was delivered: {updates:?}"
    );
    s.wait_metric("presence_open_connections", 0.0).await;
}

#[tokio::test]
async fn a_client_silent_past_the_limit_is_closed_with_4005_and_goes_offline_while_a_live_one_stays(
) {
    const SILENCE_MS: u64 = 600;
    let s = Server::start_with(
        ServerOpts::default()
            .ping(100, 60_000)
            .grace(200)
            .arg("--client-silence-ms", SILENCE_MS),
    )
    .await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "carol" })])
        .await;
    let opened = Instant::now();
    let mut alice = s.connect("alice").await;
    let mut carol = s.connect("carol").await;
    // carol's client runs: a health.check every 200 ms, for three times the limit.
    while opened.elapsed().as_millis() < 3 * u128::from(SILENCE_MS) {
        carol.health_ping().await;
        sleep_ms(200).await;
    }
    // alice's socket is alive as far as pongs go (their timeout is far away), but her client sent nothing.
    assert_eq!(
        alice.wait_close_code(WAIT).await,
        close_code::CLIENT_SILENCE
    );
    let deadline = Instant::now() + WAIT;
    while s.user_as(&Auth::Server, "alice").await["online"] != false {
        assert!(
            Instant::now() < deadline,
            "alice still online after the grace"
        );
        sleep_ms(50).await;
    }
    carol.health_ping().await;
    assert_eq!(s.user_as(&Auth::Server, "carol").await["online"], true);
    s.wait_metric("presence_open_connections", 1.0).await;
}
