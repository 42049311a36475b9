//! REST endpoints: request decoding, authentication, and the success and error envelopes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use presence_protocol::codes::error_code;
use presence_protocol::{
    ChannelQueryRequest, DurationResponse, PartialUpdateUsersRequest, QueryChannelsRequest,
    QueryChannelsResponse, QueryUsersPayload, QueryUsersResponse, UpdateUsersResponse,
    UpsertUsersRequest, User,
};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::Caller;
use crate::error::Failure;

tokio::task_local! {
    static STARTED: Instant;
}

/// Runs a request with its start time at hand, so every body can say how long it took.
pub async fn timed(req: Request, next: Next) -> Response {
    STARTED.scope(Instant::now(), next.run(req)).await
}

/// The `duration` of the request being answered.
pub fn duration() -> String {
    STARTED
        .try_with(|s| format!("{:.2}ms", s.elapsed().as_secs_f64() * 1000.0))
        .unwrap_or_else(|_| "0.00ms".to_string())
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
type Body = Result<Bytes, BytesRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, Failure> {
    p.map(|Query(q)| q)
        .map_err(|e| Failure::input(format!("invalid query string: {e}")))
}

fn body<T: DeserializeOwned + Default>(b: Body) -> Result<T, Failure> {
    let bytes = b.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            Failure::payload_too_big("request body is too large")
        }
        other => Failure::input(format!("could not read the request body: {other}")),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::input(format!("invalid JSON request body: {e}")))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Failure> {
    p.map(|Path(v)| v)
        .map_err(|e| Failure::input(format!("invalid path: {e}")))
}

/// Checks the API key and the token of a REST call.
fn authenticate(
    app: &App,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Caller, Failure> {
    let result = (|| {
        if q.get("api_key").map(String::as_str) != Some(app.config.api_key.as_str()) {
            return Err(Failure::auth(
                error_code::ACCESS_KEY,
                "api_key not found or invalid",
            ));
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("stream-auth-type") == Some("anonymous") {
            return Err(Failure::auth(
                error_code::AUTHENTICATION,
                "anonymous access is not enabled",
            ));
        }
        let token = header("authorization").unwrap_or("");
        app.verifier.verify(token, chrono::Utc::now().timestamp())
    })();
    if result.is_err() {
        app.hub
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// The connection a REST call binds subscriptions to: `connection_id` from the body if given, else the query.
fn connection_id<'a>(body: Option<&'a str>, q: &'a HashMap<String, String>) -> Option<&'a str> {
    body.or_else(|| q.get("connection_id").map(String::as_str))
}

pub async fn upsert_users(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let req: UpsertUsersRequest = body(b)?;
    let users = app.hub.upsert_users(&caller, &req.users).await?;
    Ok(users_reply(StatusCode::CREATED, users))
}

pub async fn partial_update_users(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let req: PartialUpdateUsersRequest = body(b)?;
    let users = app.hub.partial_update_users(&caller, &req.users).await?;
    Ok(users_reply(StatusCode::OK, users))
}

/// The answer to both user writes: the users as written, keyed by id.
fn users_reply(status: StatusCode, users: BTreeMap<String, User>) -> Response {
    let body = UpdateUsersResponse {
        users,
        membership_deletion_task_id: String::new(),
        duration: duration(),
    };
    (status, Json(body)).into_response()
}

pub async fn query_users(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, Failure> {
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let raw = q
        .get("payload")
        .ok_or_else(|| Failure::input("QueryUsers failed with error: \"payload is required\""))?;
    let payload: QueryUsersPayload = serde_json::from_str(raw)
        .map_err(|e| Failure::input(format!("invalid payload: {e}")).in_operation("QueryUsers"))?;
    let conn = connection_id(payload.connection_id.as_deref(), &q);
    let users = app.hub.query_users(&caller, conn, &payload)?;
    Ok(Json(QueryUsersResponse {
        users,
        duration: duration(),
    })
    .into_response())
}

pub async fn query_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let (channel_type, channel_id) = path(p)?;
    channel_query(app, headers, q, b, channel_type, Some(channel_id)).await
}

pub async fn query_distinct_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let channel_type = path(p)?;
    channel_query(app, headers, q, b, channel_type, None).await
}

async fn channel_query(
    app: Arc<App>,
    headers: HeaderMap,
    q: Params,
    b: Body,
    channel_type: String,
    channel_id: Option<String>,
) -> Result<Response, Failure> {
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let req: ChannelQueryRequest = body(b)?;
    let conn = connection_id(req.connection_id.as_deref(), &q);
    let mut state = app
        .hub
        .query_channel(&caller, conn, &channel_type, channel_id.as_deref(), &req)
        .await?;
    state.duration = Some(duration());
    Ok(created(state))
}

pub async fn query_channels(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let req: QueryChannelsRequest = body(b)?;
    let conn = connection_id(req.connection_id.as_deref(), &q);
    let channels = app.hub.query_channels(&caller, conn, &req)?;
    Ok(created(QueryChannelsResponse {
        channels,
        duration: duration(),
    }))
}

pub async fn stop_watching(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
    b: Body,
) -> Result<Response, Failure> {
    let (channel_type, channel_id) = path(p)?;
    let q = params(q)?;
    let caller = authenticate(&app, &headers, &q)?;
    let req: ConnectionBody = body(b)?;
    let conn = connection_id(req.connection_id.as_deref(), &q);
    app.hub
        .stop_watching(&caller, conn, &format!("{channel_type}:{channel_id}"))?;
    Ok(created(DurationResponse {
        duration: duration(),
    }))
}

/// A body that may name the connection and nothing else the server reads.
#[derive(Default, serde::Deserialize)]
struct ConnectionBody {
    #[serde(default)]
    connection_id: Option<String>,
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.hub.metrics;
    let rows = [
        (
            "presence_open_connections",
            "gauge",
            "Open WebSocket connections.",
            m.open_connections.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_online_users",
            "gauge",
            "Users visibly online.",
            m.online_users.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_events_sent_total",
            "counter",
            "Frames queued to connections.",
            m.events_sent.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_auth_failures_total",
            "counter",
            "Rejected credentials, REST and WebSocket.",
            m.auth_failures.load(Ordering::Relaxed).to_string(),
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in rows {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

pub async fn not_found(req: Request) -> Failure {
    Failure::not_found(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

pub async fn method_not_allowed(req: Request) -> Failure {
    Failure::new(
        error_code::INPUT,
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}
