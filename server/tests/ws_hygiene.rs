//! What a WebSocket client can make the server hold, seen from raw clients: a client that floods Pings and reads
//! nothing is closed once the pongs it is owed pass the send queue's bound, and the server's memory stays put; a
//! consumer evicted as too slow gets its close 4003 even when it resumes reading late; an oversized frame is
//! answered with close 1009.

mod common;

use std::time::{Duration, Instant};

use common::*;
use presence_protocol::codes::close_code;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A connected WebSocket of `user` over a raw socket with a small receive buffer; the upgrade answer read,
/// nothing after it.
async fn raw_upgrade(s: &Server, user: &str) -> TcpStream {
    let params = Server::connect_params(user, &json!({ "id": user }), &s.user_token(user));
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = s.ws_url(&p);
    let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket
        .connect(format!("127.0.0.1:{}", s.port).parse().unwrap())
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.port
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("upgrade answer within the wait")
            .unwrap();
        assert_eq!(n, 1, "closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A masked Ping frame from a client, with a payload of `len` bytes.
fn client_ping(len: u8) -> Vec<u8> {
    assert!(len <= 125);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x89, 0x80 | len];
    frame.extend_from_slice(&mask);
    frame.extend((0..len as usize).map(|i| b'p' ^ mask[i % 4]));
    frame
}

/// Server frames read until the stream ends or `limit` passes: the close code if a close frame came, and
/// whether the stream ended.
async fn read_until_end(tcp: &mut TcpStream, limit: Duration) -> (Option<u16>, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut close = None;
    loop {
        // Whole frames at the front of the buffer: only a close frame matters.
        loop {
            if buf.len() < 2 {
                break;
            }
            let (mut len, mut pos) = ((buf[1] & 0x7f) as usize, 2);
            if len == 126 {
                if buf.len() < 4 {
                    break;
                }
                len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
                pos = 4;
            } else if len == 127 {
                if buf.len() < 10 {
                    break;
                }
                len = u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize;
                pos = 10;
            }
            if buf.len() < pos + len {
                break;
            }
            if buf[0] & 0x0f == 8 && len >= 2 {
                close = Some(u16::from_be_bytes([buf[pos], buf[pos + 1]]));
            }
            buf.drain(..pos + len);
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return (close, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (close, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_pings_and_reads_nothing_is_closed_and_the_server_stays_small() {
    const PINGS: usize = 400_000;
    const BATCH: usize = 1_000;
    // Keep-alive out of the way: the pings themselves keep the connection heard from.
    let s = Server::binary(
        ServerOpts::default()
            .ping(60_000, 120_000)
            .arg("--send-queue-bytes", 64 * 1024),
    )
    .await;
    let mut tcp = raw_upgrade(&s, "pinger").await;
    let before = rss_kib(s.pid());
    let batch: Vec<u8> = client_ping(100).repeat(BATCH);
    let started = Instant::now();
    let mut sent = 0;
    while sent < PINGS {
        match tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&batch)).await {
            Ok(Ok(())) => sent += BATCH,
            // The server stopped reading (or closed): the flood is over.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let after = rss_kib(s.pid());
    eprintln!(
        "{sent} pings of 100 bytes in {:?}: server RSS {before} KiB -> {after} KiB (+{} KiB)",
        started.elapsed(),
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "the server grew from {before} KiB to {after} KiB under {sent} pings"
    );
    let (close, ended) = read_until_end(&mut tcp, Duration::from_secs(15)).await;
    assert!(
        ended,
        "a client owed pongs past the bound is still connected"
    );
    if let Some(code) = close {
        assert_eq!(code, close_code::SLOW_CONSUMER);
    }
    s.wait_metric("presence_open_connections", 0.0).await;
}

#[tokio::test]
async fn a_consumer_evicted_as_too_slow_gets_close_4003_when_it_reads_again_later() {
    const BOUND: usize = 64 * 1024;
    let s = Server::start_with(
        ServerOpts::default()
            .ping(60_000, 120_000)
            .arg("--send-queue-bytes", BOUND),
    )
    .await;
    let mut alice = raw_upgrade(&s, "alice").await;
    s.wait_metric("presence_open_connections", 1.0).await;
    // Updates of alice go to her own connection, which reads nothing, until it is evicted.
    let mut sent = 0;
    while s.metric("presence_open_connections").await != 0.0 {
        assert!(
            sent < 4_000,
            "still connected after {sent} updates of ~3 KB"
        );
        let status = format!("{sent:06}{}", "q".repeat(3000));
        s.partial_update(&Auth::Server, "alice", json!({ "status": status }), &[])
            .await
            .ok(200);
        sent += 1;
    }
    // It comes back to its socket well after the eviction, as a busy or suspended client would.
    sleep_ms(2_500).await;
    let (close, ended) = read_until_end(&mut alice, Duration::from_secs(15)).await;
    assert!(ended, "the evicted connection did not end");
    assert_eq!(
        close,
        Some(close_code::SLOW_CONSUMER),
        "an evicted consumer must find close 4003 after its frames"
    );
}

#[tokio::test]
async fn an_oversized_frame_is_answered_with_close_1009() {
    let s = Server::start().await;
    // Just over the limit, and far over it: the unread rest of the frame must not cost the close frame.
    for pad in [100 * 1024, 4 * 1024 * 1024] {
        let mut ws = s.connect("alice").await;
        let big = format!(
            "[{{\"type\":\"health.check\",\"pad\":\"{}\"}}]",
            "x".repeat(pad)
        );
        ws.send_text(&big).await;
        assert_eq!(
            ws.wait_closed(WAIT).await,
            Closed::Frame(Some(close_code::MESSAGE_TOO_BIG)),
            "a frame of {pad} bytes"
        );
    }
}
