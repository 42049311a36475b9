//! The WebSocket edge: the upgrade and handshake authentication. What happens on the socket afterwards (the
//! answer to a refused handshake, or the life of an accepted connection) is in [`conn`]; each connection's send
//! queue and liveness in [`outlet`] and [`liveness`]; the sockets this process holds, where the driver's
//! deliveries land, in [`sockets`].

mod conn;
mod liveness;
mod outlet;
mod sockets;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use presence_protocol::{ConnectPayload, JsonMap};

use crate::auth::TokenVerifier;
use crate::error::{Error, ErrorKind};
use crate::model::Caller;
use crate::state::AppState;

pub use self::conn::{read_client_frame, ClientFrame};
pub use self::sockets::Outlets;

/// Largest frame or message a client may send: client frames are tiny pings.
pub(crate) const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Room the WebSocket's write buffer keeps beyond the send queue's bound: a pong, the close frame and the
/// frame headers, so that a connection closed for holding too much still gets its close frame out.
const CONTROL_FRAME_ROOM: usize = 512;

/// `GET /connect`.
pub async fn connect(
    State(app): State<Arc<AppState>>,
    sockets: Arc<Outlets>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return Error::input(format!("/connect expects a WebSocket upgrade: {e}"))
                .into_response()
        }
    };
    let auth = match query {
        Ok(Query(q)) => authenticate(
            &app.api_key,
            &app.verifier,
            &q,
            chrono::Utc::now().timestamp(),
        )
        .and_then(|(user_id, details)| Ok((user_id, details, batch_window(&q)?))),
        Err(e) => Err(Error::input(format!("invalid query string: {e}"))),
    };
    match &auth {
        Err(e) if e.kind().is_auth() => app.count_auth_failure(),
        Err(_) => {}
        // Only a connect that would be let in counts against the readmission pace: junk with a wrong key or
        // token must neither spend the returning crowd's budget nor end the pacing early. It is refused before
        // the upgrade, a failed attempt which every client retries after its backoff.
        Ok(_) => {
            if !app.admission.admit(std::time::Instant::now()) {
                app.count_paced_connect();
                let error = Error::new(
                    ErrorKind::RateLimited,
                    "the server is readmitting its clients after a restart; retry later",
                );
                return ([(RETRY_AFTER, "1")], error).into_response();
            }
        }
    }
    // The connection task flushes every frame before taking the next, so the write buffer holds at most one
    // frame, the pongs owed to a client that does not read, and the close frame; bounding it bounds those pongs
    // (tungstenite keeps only the latest one waiting once the buffer is full).
    let max_write_buffer = app.send_queue_bytes.saturating_add(CONTROL_FRAME_ROOM);
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| conn::serve(app, sockets, Box::new(auth), socket))
}

/// The longest batching window a client may ask for.
pub const MAX_BATCH_MS: u64 = 50;

/// `batch_ms=N` of the connect URL (1-50): the client takes frames that hold an array of the events of up to N ms.
/// Absent or 0: one event per frame, as Stream's protocol has it.
fn batch_window(q: &HashMap<String, String>) -> Result<Option<std::time::Duration>, Error> {
    let Some(raw) = q.get("batch_ms") else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) if ms <= MAX_BATCH_MS => Ok(Some(std::time::Duration::from_millis(ms))),
        _ => Err(Error::input(format!(
            "batch_ms must be a whole number of milliseconds from 0 to {MAX_BATCH_MS}, got {raw:?}"
        ))),
    }
}

/// Validates the connect URL's parameters at `now` (Unix seconds): API key, `json` payload, token, and that the
/// token's user is the one connecting. Gives that user and the `user_details` to apply.
pub fn authenticate(
    api_key: &str,
    verifier: &TokenVerifier,
    q: &HashMap<String, String>,
    now: i64,
) -> Result<(String, JsonMap), Error> {
    if q.get("api_key").map(String::as_str) != Some(api_key) {
        return Err(Error::new(
            ErrorKind::ApiKey,
            "api_key not found or invalid",
        ));
    }
    let payload: ConnectPayload = serde_json::from_str(q.get("json").map_or("", String::as_str))
        .map_err(|e| Error::input(format!("invalid json parameter: {e}")))?;
    if payload.user_id.is_empty() {
        return Err(Error::input("json.user_id is required"));
    }
    if let Some(id) = payload.user_details.get("id") {
        if id.as_str() != Some(payload.user_id.as_str()) {
            return Err(Error::input(
                "json.user_details.id does not match json.user_id",
            ));
        }
    }
    if q.get("stream-auth-type").map(String::as_str) == Some("anonymous") {
        return Err(Error::new(
            ErrorKind::Authentication,
            "anonymous connections are not enabled",
        ));
    }
    let token = q.get("authorization").map_or("", String::as_str);
    match verifier.verify(token, now)? {
        Caller::User(id) if id == payload.user_id => Ok((id, payload.user_details)),
        Caller::User(id) => Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "JWTAuth error: token is for user {id}, not {}",
                payload.user_id
            ),
        )),
        Caller::Server => Err(Error::new(
            ErrorKind::Authentication,
            "a server token cannot open a user connection",
        )),
    }
}
