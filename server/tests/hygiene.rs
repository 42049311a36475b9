//! Connection hygiene at the HTTP edge, seen from raw TCP clients: requests whose headers never finish and idle
//! keep-alive connections are closed after their timeouts on both ports, a flood of half-sent requests beyond
//! the process's file limit still leaves `/healthz` answered, the admin port answers only for its own address,
//! and an answer given before a request's body was read says the connection closes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

/// Reads until the peer closes (Ok: how long it took from `since`) or `limit` passes (Err).
async fn wait_for_close(
    tcp: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> Result<Duration, ()> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((since + limit).into(), tcp.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// One whole response on `tcp` (headers and a `content-length` body): status line and headers, lower-cased
/// names, and the body.
async fn read_response(tcp: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while data.len() < end + 4 + len {
                let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
                    .await
                    .expect("no whole body within 5 s")
                    .expect("read");
                assert!(n > 0, "closed inside the body");
                data.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]).to_string();
            return (status, headers, body);
        }
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("no response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

/// `GET path` on a new connection with `host` as `Host`, answered within 5 s.
async fn get(port: u16, path: &str, host: &str) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .expect("connect within 5 s")
    .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    read_response(&mut tcp).await
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_closed_after_the_header_read_timeout() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--header-read-timeout-ms", 400)
            .arg("--idle-timeout-ms", 60_000),
    )
    .await;
    for base in [s.base.clone(), s.admin_base.clone().unwrap()] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port_of(&base)))
            .await
            .unwrap();
        let since = Instant::now();
        tcp.write_all(HALF_SENT).await.unwrap();
        // A byte now and then is no progress towards a whole request.
        tcp.write_all(b"a").await.unwrap();
        let took = wait_for_close(&mut tcp, since, Duration::from_secs(5))
            .await
            .unwrap_or_else(|()| panic!("{base}: a half-sent request held for 5 s"));
        assert!(
            took >= Duration::from_millis(300),
            "{base}: closed after {took:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--header-read-timeout-ms", 30_000)
            .arg("--idle-timeout-ms", 400),
    )
    .await;
    for base in [s.base.clone(), s.admin_base.clone().unwrap()] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port_of(&base)))
            .await
            .unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let (status, _, body) = read_response(&mut tcp).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{base}");
        let since = Instant::now();
        let took = wait_for_close(&mut tcp, since, Duration::from_secs(5))
            .await
            .unwrap_or_else(|()| panic!("{base}: an idle connection held for 5 s"));
        assert!(
            took >= Duration::from_millis(300),
            "{base}: closed after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_beyond_the_file_limit_leave_healthz_answered() {
    const OPEN_FILES: usize = 256;
    // Long timeouts: what keeps the server reachable here is the connection cap, not the clock.
    let s = Server::start_with(
        ServerOpts::default()
            .open_files(OPEN_FILES as u64)
            .arg("--header-read-timeout-ms", 30_000)
            .arg("--idle-timeout-ms", 30_000),
    )
    .await;
    let admin_port = port_of(s.admin_base.as_ref().unwrap());
    let mut held = Vec::new();
    for port in [s.port, admin_port] {
        for _ in 0..OPEN_FILES + 64 {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            // The kernel completes connections the server has not accepted: a write may not fail either.
            let _ = tcp.write_all(HALF_SENT).await;
            held.push(tcp);
        }
        for target in [s.port, admin_port] {
            let (status, _, body) = get(target, "/healthz", "127.0.0.1").await;
            assert_eq!((status, body.as_str()), (200, "ok\n"), "port {target}");
        }
    }
    // The server still serves the API, and evicted the oldest half-sent requests to make room.
    let users = s.upsert(&[serde_json::json!({ "id": "still-here" })]).await;
    assert!(users["users"]["still-here"].is_object(), "{users}");
    let mut closed = 0;
    for tcp in held.iter_mut().take(64) {
        if wait_for_close(tcp, Instant::now(), Duration::from_millis(200))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert!(
        closed > 0,
        "none of the oldest half-sent requests was closed"
    );
}

#[tokio::test]
async fn the_admin_port_answers_only_for_its_own_address_and_loopback_names() {
    let s = Server::start().await;
    let admin_port = port_of(s.admin_base.as_ref().unwrap());
    for host in [
        format!("127.0.0.1:{admin_port}"),
        format!("localhost:{admin_port}"),
        "localhost".to_string(),
        format!("[::1]:{admin_port}"),
    ] {
        let (status, _, body) = get(admin_port, "/metrics", &host).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    for host in [
        format!("rebound.example:{admin_port}"),
        "rebound.example".to_string(),
        format!("localhost.rebound.example:{admin_port}"),
    ] {
        let (status, _, body) = get(admin_port, "/metrics", &host).await;
        assert_eq!(status, 421, "Host {host}: {body}");
        let envelope: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_error_envelope(&envelope, 421, 17, &host);
    }
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_keeps_the_connection_usable_or_says_it_closes() {
    let s = Server::start().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    // The answer comes before the whole body is there: the rest follows it, as from a client that writes its
    // body in parts.
    let (first, rest) = ("x".repeat(300), "x".repeat(64 * 1024));
    let req = format!(
        "POST /no-such-endpoint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}",
        first.len() + rest.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let (status, headers, _) = read_response(&mut tcp).await;
    assert_eq!(status, 404);
    let says_close = headers
        .iter()
        .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
    if says_close {
        return;
    }
    // Not announced as closing: the connection must carry the rest of the body, then the next request.
    sleep_ms(200).await;
    let _ = tcp.write_all(rest.as_bytes()).await;
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let (status, _, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn at_the_cap_an_idle_connection_makes_room_and_websockets_are_never_evicted() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--max-http-connections", 4)
            .arg("--header-read-timeout-ms", 30_000)
            .arg("--idle-timeout-ms", 30_000),
    )
    .await;
    let mut sockets = Vec::new();
    for i in 0..3 {
        sockets.push(s.connect(&format!("user-{i}")).await);
    }
    // The fourth place goes to a request whose headers never finish.
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    slow.write_all(HALF_SENT).await.unwrap();
    sleep_ms(100).await;
    // A newcomer takes its place: the half-sent request is closed, the newcomer answered.
    let (status, _, body) = get(s.port, "/healthz", "127.0.0.1").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    wait_for_close(&mut slow, Instant::now(), Duration::from_secs(2))
        .await
        .expect("the half-sent request was not evicted");
    // Four WebSockets fill the cap: nothing can make room, so a newcomer is refused, and no socket is touched.
    sockets.push(s.connect("user-3").await);
    let (status, headers, body) = get(s.port, "/healthz", "127.0.0.1").await;
    assert_eq!(status, 503, "{body}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("connection"), Some("close"));
    assert_eq!(header("retry-after"), Some("1"));
    let envelope: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_error_envelope(&envelope, 503, -1, "over the connection cap");
    assert_eq!(s.metric("presence_open_connections").await, 4.0);
    for ws in &mut sockets {
        let reply = ws.health_ping().await;
        assert_eq!(reply["type"], "health.check", "{reply}");
    }
    // A socket that ends frees its place.
    let gone = sockets.pop().unwrap();
    gone.close(1000).await;
    s.wait_metric("presence_open_connections", 3.0).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = get(s.port, "/healthz", "127.0.0.1").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after a socket ended"
        );
        sleep_ms(50).await;
    }
}

#[tokio::test]
async fn a_request_body_that_stalls_ends_the_request() {
    let s = Server::start_with(
        ServerOpts::default()
            .arg("--header-read-timeout-ms", 400)
            .arg("--idle-timeout-ms", 60_000),
    )
    .await;
    let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let token = s.server_token();
    let req = format!(
        "POST /users?api_key={API_KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\
         stream-auth-type: jwt\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"users\":"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let since = Instant::now();
    // The rest of the body never comes: the request is answered with an error, or the connection closed.
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("a stalled request body held the request for 5 s");
    if let Ok(n) = answer {
        if n > 0 {
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(head.starts_with("HTTP/1.1 4"), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
        }
    }
    assert!(since.elapsed() >= Duration::from_millis(300));
}
