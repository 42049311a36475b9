//! WebSocket clients: the SDK-like client over tungstenite, and a bare one that never answers anything.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

impl Server {
    // -- WebSocket ------------------------------------------------------------------------------------------------

    /// The `/connect` URL with the given query parameters, form-encoded like the SDK's `URLSearchParams`.
    pub fn ws_url(&self, params: &[(&str, &str)]) -> Url {
        let mut url = Url::parse(&format!("ws://127.0.0.1:{}/connect", self.port)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// The SDK's connect parameters for `user_id` with `details` and `token`.
    pub fn connect_params(user_id: &str, details: &Value, token: &str) -> Vec<(String, String)> {
        let payload = json!({
            "user_id": user_id,
            "user_details": details,
            "client_request_id": format!("req-{}", uuid_like()),
        });
        vec![
            ("json".into(), payload.to_string()),
            ("api_key".into(), API_KEY.into()),
            ("authorization".into(), token.into()),
            ("stream-auth-type".into(), "jwt".into()),
            (
                "X-Stream-Client".into(),
                "stream-chat-js-v9.53.0-node|client_bundle=node-cjs".into(),
            ),
        ]
    }

    /// Open a WebSocket with raw query parameters; no frame is consumed.
    pub async fn open_ws(&self, params: &[(String, String)], user_id: &str) -> Ws {
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = self.ws_url(&p);
        Ws::open(url.as_str(), user_id).await
    }

    /// Connect as `user_id` with a valid token and `user_details: {id}`; reads the first frame.
    pub async fn connect(&self, user_id: &str) -> Ws {
        self.connect_with(user_id, json!({ "id": user_id })).await
    }

    /// Connect as `user_id` with the given `user_details`; reads and checks the first `health.check` frame.
    pub async fn connect_with(&self, user_id: &str, details: Value) -> Ws {
        let token = self.user_token(user_id);
        self.connect_token(user_id, details, &token).await
    }

    /// Opens a connection the server is to refuse: returns the `connection.error` frame it sends first, and the
    /// socket, for its close.
    pub async fn refused_connect(&self, user_id: &str, details: &Value) -> (Value, Ws) {
        let params = Server::connect_params(user_id, details, &self.user_token(user_id));
        let mut ws = self.open_ws(&params, user_id).await;
        let frame = match ws.next(WAIT).await {
            Some(Incoming::Json(v)) => v,
            other => panic!("expected a connection.error frame, got {other:?}"),
        };
        assert_eq!(frame["type"], event_type::CONNECTION_ERROR, "{frame}");
        (frame, ws)
    }

    pub async fn connect_token(&self, user_id: &str, details: Value, token: &str) -> Ws {
        let params = Server::connect_params(user_id, &details, token);
        let mut ws = self.open_ws(&params, user_id).await;
        ws.handshake().await;
        ws
    }
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------------------------

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone)]
pub enum Incoming {
    Json(Value),
    NotJson(String),
    Binary(usize),
    Ping,
    /// A close frame: its code (None when it carried none) and reason.
    Close(Option<u16>, String),
    /// The stream ended (EOF or error) after or without a close frame.
    Ended(String),
}

/// How a connection ended, as seen by the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// A close frame arrived with this code (None: a close frame without a code).
    Frame(Option<u16>),
    /// The stream ended without a close frame.
    NoFrame,
}

pub struct Ws {
    pub user_id: String,
    pub connection_id: String,
    /// The first frame (`health.check`).
    pub first: Value,
    rx: mpsc::UnboundedReceiver<Incoming>,
    sink: SplitSink<WsStream, Message>,
    reader: JoinHandle<()>,
    pub pings: usize,
    closed: Option<Closed>,
    /// Frames skipped by `wait_for`, handed out again (in order) by later reads.
    backlog: std::collections::VecDeque<Incoming>,
}

/// Forwards every frame the server sends (protocol Pings included, which tungstenite answers) until the end.
async fn read_loop(mut stream: SplitStream<WsStream>, tx: mpsc::UnboundedSender<Incoming>) {
    while let Some(msg) = stream.next().await {
        let item = match msg {
            Ok(Message::Text(t)) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) => Incoming::Json(v),
                Err(_) => Incoming::NotJson(t.to_string()),
            },
            Ok(Message::Binary(b)) => Incoming::Binary(b.len()),
            Ok(Message::Ping(_)) => Incoming::Ping,
            Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
            Ok(Message::Close(f)) => match f {
                Some(f) => Incoming::Close(Some(u16::from(f.code)), f.reason.to_string()),
                None => Incoming::Close(None, String::new()),
            },
            Err(e) => {
                let _ = tx.send(Incoming::Ended(e.to_string()));
                return;
            }
        };
        if tx.send(item).is_err() {
            return;
        }
    }
    let _ = tx.send(Incoming::Ended("end of stream".into()));
}

impl Ws {
    /// Open the socket (asserting the upgrade succeeds) without reading any frame.
    pub async fn open(url: &str, user_id: &str) -> Ws {
        let (stream, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket upgrade timed out: {url}"))
            .unwrap_or_else(|e| panic!("WebSocket upgrade failed for {url}: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        let (sink, stream) = stream.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, tx));
        Ws {
            user_id: user_id.to_string(),
            connection_id: String::new(),
            first: Value::Null,
            rx,
            sink,
            reader,
            pings: 0,
            closed: None,
            backlog: std::collections::VecDeque::new(),
        }
    }

    /// Read the first frame, check it is a successful `health.check`, remember `connection_id`.
    pub async fn handshake(&mut self) {
        let first = match self.next(WAIT).await {
            Some(Incoming::Json(v)) => v,
            other => panic!(
                "{}: expected a health.check first frame, got {other:?}",
                self.user_id
            ),
        };
        assert_eq!(
            first["type"],
            event_type::HEALTH_CHECK,
            "{}: first frame must be health.check: {first}",
            self.user_id
        );
        assert!(
            first.get("error").is_none(),
            "first frame carries an error: {first}"
        );
        let id = first["connection_id"]
            .as_str()
            .unwrap_or_else(|| panic!("first frame without connection_id: {first}"));
        assert!(!id.is_empty(), "empty connection_id: {first}");
        self.connection_id = id.to_string();
        self.first = first;
    }

    pub fn me(&self) -> &Value {
        &self.first["me"]
    }

    /// The next frame other than a protocol Ping, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Incoming> {
        if let Some(item) = self.backlog.pop_front() {
            return Some(item);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => return Some(Incoming::Ended("reader stopped".into())),
                Ok(Some(Incoming::Ping)) => self.pings += 1,
                Ok(Some(item)) => {
                    if self.closed.is_none() {
                        match &item {
                            Incoming::Close(code, _) => self.closed = Some(Closed::Frame(*code)),
                            Incoming::Ended(_) => self.closed = Some(Closed::NoFrame),
                            _ => {}
                        }
                    }
                    return Some(item);
                }
            }
        }
    }

    /// Wait for a JSON event satisfying `pred`; events before it stay queued for later reads. Panics on timeout
    /// or close.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Json(v)) => {
                    if pred(&v) {
                        for item in skipped.into_iter().rev() {
                            self.backlog.push_front(Incoming::Json(item));
                        }
                        return v;
                    }
                    skipped.push(v);
                }
                Some(Incoming::NotJson(t)) => panic!("{}: server sent a non-JSON text frame: {t:?}", self.user_id),
                Some(Incoming::Binary(_)) => panic!("{}: server sent a binary frame", self.user_id),
                Some(other) => panic!(
                    "{} ({}): connection ended while waiting for {what}: {other:?}; other events: {skipped:?}",
                    self.user_id, self.connection_id
                ),
                None => panic!(
                    "{} ({}): no {what} within {timeout:?}; other events: {skipped:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    pub async fn wait_type(&mut self, kind: &str, timeout: Duration) -> Value {
        self.wait_for(kind, timeout, |v| v["type"] == kind).await
    }

    /// Wait for `user.presence.changed` about `user` with `online`.
    pub async fn wait_presence(&mut self, user: &str, online: bool, timeout: Duration) -> Value {
        let what = format!("user.presence.changed {user} online={online}");
        self.wait_for(&what, timeout, |v| {
            v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user
        })
        .await
        .also(|ev| {
            assert_eq!(
                ev["user"]["online"], online,
                "presence event about {user} with the wrong online value: {ev}"
            )
        })
    }

    /// Collect every JSON event satisfying `pred` during `window`. Panics if the connection ends meanwhile
    /// (an absent event on a dead socket proves nothing).
    pub async fn collect(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next(left).await {
                None => return out,
                Some(Incoming::Json(v)) => {
                    if pred(&v) {
                        out.push(v);
                    }
                }
                Some(other) => panic!(
                    "{} ({}): connection ended during a quiet window: {other:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    /// Assert that no event satisfying `pred` arrives during `window`.
    pub async fn expect_none(
        &mut self,
        what: &str,
        window: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        let got = self.collect(window, pred).await;
        assert!(
            got.is_empty(),
            "{} ({}): expected no {what} within {window:?}, got {got:?}",
            self.user_id,
            self.connection_id
        );
    }

    /// Assert that no `user.presence.changed` about `user` arrives during `window`.
    pub async fn expect_no_presence(&mut self, user: &str, window: Duration) {
        self.expect_none(
            &format!("user.presence.changed about {user}"),
            window,
            |v| v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user,
        )
        .await
    }

    /// Drain whatever is already queued (non-blocking beyond a short settle time).
    pub async fn drain(&mut self, settle: Duration) -> Vec<Value> {
        self.collect(settle, |_| true).await
    }

    /// Wait until the connection ends; skips events. Panics on timeout.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Closed {
        if let Some(c) = &self.closed {
            return c.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Close(code, _)) => return Closed::Frame(code),
                Some(Incoming::Ended(reason)) => {
                    if std::env::var("PRESENCE_TEST_DEBUG").is_ok() {
                        eprintln!("{}: stream ended: {reason}", self.user_id);
                    }
                    return self.closed.clone().unwrap_or(Closed::NoFrame);
                }
                Some(_) => continue,
                None => panic!(
                    "{} ({}): connection still open after {timeout:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    /// Wait for a close frame and return its code; panics if the stream ends without one.
    pub async fn wait_close_code(&mut self, timeout: Duration) -> u16 {
        match self.wait_closed(timeout).await {
            Closed::Frame(Some(code)) => code,
            other => panic!(
                "{} ({}): expected a close frame with a code, got {other:?}",
                self.user_id, self.connection_id
            ),
        }
    }

    pub async fn send(&mut self, msg: Message) {
        tokio::time::timeout(WAIT, self.sink.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_string())).await
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await
    }

    /// Send the SDK's keep-alive ping and return the server's `health.check` answer.
    pub async fn health_ping(&mut self) -> Value {
        let ping = json!([{ "type": "health.check", "client_id": format!("{}--{}", self.user_id, uuid_like()) }]);
        self.send_json(&ping).await;
        self.wait_type(event_type::HEALTH_CHECK, WAIT).await
    }

    /// Send a close frame with `code` and wait (bounded) for the server to finish the closing handshake.
    pub async fn close(mut self, code: u16) {
        self.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })))
        .await;
        self.finish_close().await;
    }

    /// Send a close frame without a status code (the server sees 1005).
    pub async fn close_without_code(mut self) {
        self.send(Message::Close(None)).await;
        self.finish_close().await;
    }

    async fn finish_close(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                None | Some(Incoming::Ended(_)) => break,
                Some(_) => continue,
            }
        }
        let _ = self.sink.close().await;
    }

    /// Drop the TCP connection without any close frame (the server sees 1006).
    pub async fn drop_tcp(self) {
        let Ws { reader, sink, .. } = self;
        reader.abort();
        let _ = reader.await;
        drop(sink);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A bare WebSocket client that never answers anything: for frozen-client tests
// ---------------------------------------------------------------------------------------------------------------

/// A WebSocket over a plain TCP stream, driven by hand: it sends nothing after the handshake (no Pongs) and
/// reads only when asked, so the server sees a client that is alive at the TCP level but silent.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server: opcode and payload.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    pub fn json(&self) -> Option<Value> {
        (self.opcode == 1)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }
}

impl RawWs {
    /// Connect as `user_id` and read the first frame (which must be `health.check`).
    pub async fn connect(server: &Server, user_id: &str) -> (RawWs, Value) {
        RawWs::connect_with_recv_buffer(server, user_id, None).await
    }

    /// Like `connect`, with the socket's receive buffer fixed at `recv_buffer` bytes (no autotuning), so that
    /// a client that stops reading makes the server's writes block after little data.
    pub async fn connect_with_recv_buffer(
        server: &Server,
        user_id: &str,
        recv_buffer: Option<u32>,
    ) -> (RawWs, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let params = Server::connect_params(
            user_id,
            &json!({ "id": user_id }),
            &server.user_token(user_id),
        );
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = server.ws_url(&p);
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.port
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("upgrade response timed out")
                .unwrap();
            assert!(n > 0, "connection closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        let mut ws = RawWs {
            stream,
            buf: buf[header_end..].to_vec(),
        };
        let first = loop {
            let f = ws.read_frame(WAIT).await.expect("first frame");
            if let Some(v) = f.json() {
                break v;
            }
        };
        assert_eq!(first["type"], event_type::HEALTH_CHECK, "{first}");
        (ws, first)
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut len = (b[1] & 0x7f) as usize;
        let mut pos = 2;
        if len == 126 {
            if b.len() < 4 {
                return None;
            }
            len = u16::from_be_bytes([b[2], b[3]]) as usize;
            pos = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return None;
            }
            len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            pos = 10;
        }
        assert!(!masked, "server frames must not be masked");
        if b.len() < pos + len {
            return None;
        }
        let payload = b[pos..pos + len].to_vec();
        self.buf.drain(..pos + len);
        Some(RawFrame { opcode, payload })
    }

    /// The next frame, or None at end of stream or timeout.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read everything the server sent until it closed the stream (bounded).
    pub async fn read_to_end(&mut self, timeout: Duration) -> Vec<RawFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(f) => frames.push(f),
                None => return frames,
            }
        }
    }
}
