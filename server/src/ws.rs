//! The WebSocket endpoint: handshake authentication, the first `health.check`, protocol pings, the pong
//! deadline, client pings, and how each way of ending a connection counts for presence.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use presence_protocol::codes::{close_code, error_code, event_type};
use presence_protocol::{ConnectPayload, Event, JsonMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::app::App;
use crate::auth::Caller;
use crate::error::Failure;
use crate::hub::{ConnHandle, Ending};
use crate::model::event_time;

/// Largest frame or message a client may send: client frames are tiny pings.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub async fn connect(
    State(app): State<Arc<App>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return Failure::input(format!("/connect expects a WebSocket upgrade: {e}"))
                .into_response()
        }
    };
    let auth = match query {
        Ok(Query(q)) => authenticate(&app, &q),
        Err(e) => Err(Failure::input(format!("invalid query string: {e}"))),
    };
    if let Err(f) = &auth {
        if f.status == axum::http::StatusCode::UNAUTHORIZED {
            app.hub
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    upgrade
        .read_buffer_size(4096)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            match auth {
                Ok((user_id, details)) => serve(app, socket, user_id, details).await,
                Err(failure) => reject(socket, failure).await,
            }
        })
}

/// Validates the connect URL: API key, `json` payload, token, and that the token's user is the one connecting.
fn authenticate(app: &App, q: &HashMap<String, String>) -> Result<(String, JsonMap), Failure> {
    if q.get("api_key").map(String::as_str) != Some(app.config.api_key.as_str()) {
        return Err(Failure::auth(
            error_code::ACCESS_KEY,
            "api_key not found or invalid",
        ));
    }
    let payload: ConnectPayload = serde_json::from_str(q.get("json").map_or("", String::as_str))
        .map_err(|e| Failure::input(format!("invalid json parameter: {e}")))?;
    if payload.user_id.is_empty() {
        return Err(Failure::input("json.user_id is required"));
    }
    if let Some(id) = payload.user_details.get("id") {
        if id.as_str() != Some(payload.user_id.as_str()) {
            return Err(Failure::input(
                "json.user_details.id does not match json.user_id",
            ));
        }
    }
    if q.get("stream-auth-type").map(String::as_str) == Some("anonymous") {
        return Err(Failure::auth(
            error_code::AUTHENTICATION,
            "anonymous connections are not enabled",
        ));
    }
    let token = q.get("authorization").map_or("", String::as_str);
    match app.verifier.verify(token, chrono::Utc::now().timestamp())? {
        Caller::User(id) if id == payload.user_id => Ok((id, payload.user_details)),
        Caller::User(id) => Err(Failure::auth(
            error_code::AUTHENTICATION,
            format!(
                "JWTAuth error: token is for user {id}, not {}",
                payload.user_id
            ),
        )),
        Caller::Server => Err(Failure::auth(
            error_code::AUTHENTICATION,
            "a server token cannot open a user connection",
        )),
    }
}

/// A failed handshake: the upgrade completes, one `connection.error` frame explains, then close 1000.
async fn reject(mut socket: WebSocket, failure: Failure) {
    let ev = Event {
        kind: event_type::CONNECTION_ERROR.to_string(),
        created_at: Some(event_time(chrono::Utc::now())),
        connection_id: Some(String::new()),
        error: Some(failure.to_api_error()),
        ..Event::default()
    };
    let text = serde_json::to_string(&ev).unwrap_or_default();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: Utf8Bytes::from_static("authentication failed"),
        })))
        .await;
}

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
async fn serve(app: Arc<App>, socket: WebSocket, user_id: String, details: JsonMap) {
    let (handle, queue) = ConnHandle::new(&user_id, app.config.send_queue);
    if let Err(failure) = app.hub.connect(&handle, &details) {
        reject(socket, failure).await;
        return;
    }
    tracing::debug!(user = %user_id, conn = %handle.id, "connected");
    let (sink, mut stream) = socket.split();
    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, queue, close_rx, app.config.ping_interval));
    let pong_timeout = app.config.pong_timeout;
    let mut last_heard = Instant::now();
    let stop = loop {
        tokio::select! {
            code = handle.evicted() => break Stop::Close(code, "closed by the server"),
            msg = stream.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    // A frame over the size limit or breaking the protocol; on a dead socket the close frame
                    // simply fails to go out.
                    Some(Err(_)) => break Stop::Close(close_code::BAD_FRAME, "unreadable or oversized frame"),
                    None => break Stop::Lost,
                };
                last_heard = Instant::now();
                match msg {
                    Message::Text(text) => {
                        if let Err(reason) = client_frame(&app, &handle, text.as_str()) {
                            break Stop::Close(close_code::BAD_FRAME, reason);
                        }
                    }
                    Message::Binary(_) => break Stop::Close(close_code::BAD_FRAME, "binary frames are not accepted"),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(frame) => break Stop::ClientClosed(frame.map(|f| f.code)),
                }
            }
            _ = tokio::time::sleep_until(last_heard + pong_timeout) => {
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
    tracing::debug!(user = %user_id, conn = %handle.id, ?ending, "disconnected");
    app.hub.disconnect(&handle.id, ending);
    if !writer.is_finished()
        && tokio::time::timeout(CLOSE_WRITE_BUDGET, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// Writes queued frames and protocol pings until told to close (or the socket fails); then sends the close frame.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Utf8Bytes>,
    mut close: oneshot::Receiver<CloseFrame>,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    loop {
        let sent = tokio::select! {
            biased;
            frame = &mut close => {
                // Dropped without a frame: the client closed or the socket is gone.
                if let Ok(frame) = frame {
                    let _ = sink.send(Message::Close(Some(frame))).await;
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

/// A text frame from the client. The only one with meaning is the keep-alive `health.check`, sent as a one-element
/// array (or a bare object); other JSON is ignored, anything else is refused.
fn client_frame(app: &App, handle: &Arc<ConnHandle>, text: &str) -> Result<(), &'static str> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "frames must be JSON")?;
    let first = match &value {
        serde_json::Value::Array(items) => items.first(),
        other => Some(other),
    };
    if first.and_then(|f| f.get("type")).and_then(|t| t.as_str()) == Some(event_type::HEALTH_CHECK)
    {
        app.hub.health_check(handle);
    }
    Ok(())
}
