//! What the server does when frames pile up for a connection: a consumer that stops reading is closed with 4003
//! once its queued frames pass the send queue's byte bound.

mod common;

use std::time::Instant;

use common::*;
use presence_protocol::codes::{close_code, event_type};
use serde_json::json;

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
            .env("PRESENCE_SEND_QUEUE_BYTES", &bound.to_string()),
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
