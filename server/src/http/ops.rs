//! Operational endpoints and fallbacks: `/healthz`, `/metrics`, unknown paths and methods.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::http::error::respond_with_status;
use crate::state::AppState;

/// `ok` (200) while the server can do its work; 503 with the parts that fail otherwise. It reports what the
/// server last saw rather than probing: the database is the hub thread's (a probe would queue behind its
/// commits, and a public endpoint must not let anyone add work to the database or Redis), and what the server
/// sees is fresh — every batch commits, and the cluster log is read from Redis every two seconds at most.
pub async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let failing = app.hub.failing_parts();
    if failing.is_empty() {
        return "ok\n".into_response();
    }
    let body = serde_json::json!({ "status": "unavailable", "failing": failing });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let counts = app.hub.counts();
    let rows = [
        (
            "presence_open_connections",
            "gauge",
            "Open WebSocket connections.",
            counts.open_connections.to_string(),
        ),
        (
            "presence_online_users",
            "gauge",
            "Users visibly online.",
            counts.online_users.to_string(),
        ),
        (
            "presence_events_sent_total",
            "counter",
            "Frames queued to connections.",
            counts.frames_sent.to_string(),
        ),
        (
            "presence_store_commits_total",
            "counter",
            "Database transactions committed (each holds a batch of writes).",
            counts.commits.to_string(),
        ),
        (
            "presence_store_writes_total",
            "counter",
            "Writes committed to the database (rows saved: users, last_active stamps, channels).",
            counts.writes_committed.to_string(),
        ),
        (
            "presence_auth_failures_total",
            "counter",
            "Rejected credentials, REST and WebSocket.",
            app.auth_failures().to_string(),
        ),
        (
            "presence_paced_connects_total",
            "counter",
            "WebSocket connects refused (429) to spread the readmission after a start.",
            app.paced_connects().to_string(),
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

pub async fn not_found(req: Request) -> Error {
    Error::not_found(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

pub async fn method_not_allowed(req: Request) -> Response {
    let error = Error::input(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ));
    respond_with_status(StatusCode::METHOD_NOT_ALLOWED, &error)
}
