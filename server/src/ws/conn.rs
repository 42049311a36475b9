//! The socket after the upgrade: a refused handshake answered, or one accepted connection: registration with
//! the hub, the read loop (client frames and the liveness they show, eviction, the pong deadline), the write
//! loop (queued frames, protocol pings, the close frame), and how each way of ending counts for presence.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use presence_protocol::codes::{close_code, event_type};
use presence_protocol::{Event, JsonMap};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::bus::{Liveness, Outlet, OutletQueue};
use crate::error::{Error, ErrorKind};
use crate::http::error::envelope;
use crate::model::event_time;
use crate::presence::{ConnId, Ending};
use crate::state::AppState;

/// Why the read loop stopped.
enum Stop {
    /// The client closed the socket, with this code if it sent one.
    ClientClosed(Option<u16>),
    /// The socket failed or vanished without a close frame.
    Lost,
    /// The server closes with this code.
    Close(u16, &'static str),
}

/// How long a connection that is being closed may take to get its close frame out before the socket is dropped.
const CLOSE_WRITE_BUDGET: Duration = Duration::from_secs(1);

/// One connection. Reading and writing run apart: a writer stuck on a peer that stopped reading must not keep
/// the reader from noticing eviction or the pong deadline, or the user from going offline.
pub(super) async fn serve(
    app: Arc<AppState>,
    socket: WebSocket,
    user_id: String,
    details: JsonMap,
) {
    let opened = Instant::now();
    let (outlet, queue) = Outlet::new(
        app.send_queue_bytes,
        Liveness::new(opened, app.ping_interval),
    );
    // The registration and the refusal are boxed: a future is as large as its largest state, and these
    // short-lived ones would otherwise size every idle connection's task.
    let registered = Box::pin(app.hub.connect(&user_id, &details, Arc::clone(&outlet))).await;
    drop(details);
    let id = match registered {
        Ok(id) => id,
        Err(error) => {
            Box::pin(reject(socket, error)).await;
            return;
        }
    };
    tracing::debug!(user = %user_id, conn = %id, "connected");
    let (sink, mut stream) = socket.split();
    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, queue, close_rx, opened, app.ping_interval));
    let liveness = outlet.liveness();
    let pong_timeout = app.pong_timeout;
    let stop = loop {
        tokio::select! {
            code = outlet.evicted() => break Stop::Close(code, eviction_reason(code)),
            msg = stream.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    // A frame over the size limit or breaking the protocol; on a dead socket the close frame
                    // simply fails to go out.
                    Some(Err(_)) => break Stop::Close(close_code::BAD_FRAME, "unreadable or oversized frame"),
                    None => break Stop::Lost,
                };
                liveness.heard(Instant::now());
                match msg {
                    Message::Text(text) => {
                        if let Err(reason) = client_frame(&app, &id, text.as_str()) {
                            break Stop::Close(close_code::BAD_FRAME, reason);
                        }
                    }
                    Message::Binary(_) => break Stop::Close(close_code::BAD_FRAME, "binary frames are not accepted"),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(frame) => break Stop::ClientClosed(frame.map(|f| f.code)),
                }
            }
            _ = tokio::time::sleep_until(liveness.last_heard() + pong_timeout) => {
                break Stop::Close(close_code::PONG_TIMEOUT, "no pong within the timeout");
            }
            _ = &mut writer => break Stop::Lost,
        }
    };
    let (ending, close_frame) = match stop {
        Stop::ClientClosed(Some(close_code::NORMAL)) => (Ending::Explicit, None),
        Stop::ClientClosed(_) | Stop::Lost => (Ending::Abnormal, None),
        Stop::Close(code, reason) => (
            Ending::Abnormal,
            Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }),
        ),
    };
    // The writer sends the close frame if there is one, and stops either way.
    match close_frame {
        Some(frame) => {
            let _ = close_tx.send(frame);
        }
        None => drop(close_tx),
    }
    tracing::debug!(user = %user_id, conn = %id, ?ending, "disconnected");
    app.hub.disconnect(&id, ending);
    if !writer.is_finished()
        && Box::pin(tokio::time::timeout(CLOSE_WRITE_BUDGET, &mut writer))
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// Writes queued frames and protocol pings (due every `ping_interval` from `opened`, the schedule the
/// connection's [`Liveness`] is measured against) until told to close (or the socket fails); then sends the
/// close frame.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: OutletQueue,
    mut close: oneshot::Receiver<CloseFrame>,
    opened: Instant,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval_at(opened + ping_interval, ping_interval);
    loop {
        let sent = tokio::select! {
            biased;
            frame = &mut close => {
                match frame {
                    Ok(frame) => {
                        let _ = sink.send(Message::Close(Some(frame))).await;
                    }
                    // Dropped without a frame: the client closed (the WebSocket layer has queued the echo of its
                    // close frame, which closing the sink sends) or the socket is gone (closing fails at once).
                    Err(_) => {
                        let _ = sink.close().await;
                    }
                }
                return;
            }
            Some(frame) = queue.recv() => sink.send(Message::Text(frame)).await,
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A text frame from the client. The only one with meaning is the keep-alive `health.check`.
fn client_frame(app: &AppState, conn: &ConnId, text: &str) -> Result<(), &'static str> {
    if read_client_frame(text)? == ClientFrame::HealthCheck {
        app.hub.health_check(conn);
    }
    Ok(())
}

/// What a client's text frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame {
    /// The keep-alive `health.check`.
    HealthCheck,
    /// Other JSON: ignored.
    Ignored,
}

/// Reads a client's text frame: a `health.check` is sent as a one-element array (or a bare object); other JSON is
/// ignored, anything else is refused with the reason the close frame gives.
pub fn read_client_frame(text: &str) -> Result<ClientFrame, &'static str> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "frames must be JSON")?;
    let first = match &value {
        serde_json::Value::Array(items) => items.first(),
        other => Some(other),
    };
    if first.and_then(|f| f.get("type")).and_then(|t| t.as_str()) == Some(event_type::HEALTH_CHECK)
    {
        Ok(ClientFrame::HealthCheck)
    } else {
        Ok(ClientFrame::Ignored)
    }
}

/// Why the server closes a connection it evicted, by close code.
fn eviction_reason(code: u16) -> &'static str {
    match code {
        close_code::SLOW_CONSUMER => "the send queue is full: frames were not read fast enough",
        close_code::PONG_TIMEOUT => {
            "a ping went unanswered; a new connection of the user took this one's place"
        }
        close_code::GOING_AWAY => "the server is shutting down",
        _ => "closed by the server",
    }
}

/// A refused connection: the upgrade completes, one `connection.error` frame explains, then the close: 1000 (a
/// permanent refusal, clients do not retry) unless the refusal is temporary: the per-user connection cap closes
/// with 1013 and a server failure (its database is unwritable) with 1011, so that clients retry with backoff.
pub(super) async fn reject(mut socket: WebSocket, error: Error) {
    let (code, reason) = match error.kind() {
        ErrorKind::TooManyConnections => (
            close_code::TRY_AGAIN_LATER,
            "too many connections for this user; try again later",
        ),
        ErrorKind::Internal => (
            close_code::INTERNAL_ERROR,
            "the server failed; try again later",
        ),
        _ => (close_code::NORMAL, "connection refused"),
    };
    let ev = Event {
        kind: event_type::CONNECTION_ERROR.to_string(),
        created_at: Some(event_time(chrono::Utc::now())),
        connection_id: Some(String::new()),
        error: Some(envelope(&error)),
        ..Event::default()
    };
    let text = serde_json::to_string(&ev).unwrap_or_default();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}
