//! Operational endpoints and fallbacks: `/healthz`, `/metrics`, unknown paths and methods, and the admin port's
//! check of the `Host` it is asked for.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, ErrorKind};
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
    let hooks = &app.webhooks;
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
            "presence_follows",
            "gauge",
            "Presence subscriptions: (connection, user) pairs followed through queryUsers with presence.",
            counts.follows.to_string(),
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
            "presence_webhook_delivered_total",
            "counter",
            "Webhook events acknowledged (2xx) by the receiver.",
            hooks.delivered.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_webhook_failed_total",
            "counter",
            "Webhook attempts that failed (no 2xx, a timeout, a refused connection); each is retried.",
            hooks.failed.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_webhook_dropped_total",
            "counter",
            "Webhook events given up: still failing after 24 h, or pushed out of a full outbox.",
            hooks.dropped.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_webhook_outbox_depth",
            "gauge",
            "Webhook events waiting for delivery (in flight included).",
            hooks.depth.load(Ordering::Relaxed).to_string(),
        ),
        (
            "presence_webhook_delay_seconds_sum",
            "counter",
            "Time from each change to the receiver's acknowledgement of its event, summed.",
            format!("{:.3}", hooks.delay_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0),
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

/// Answers only requests whose `Host` names the admin address itself (any address of the machine when bound to
/// all of them) or a loopback name, any port: a page that had its own domain rebound to this machine (DNS
/// rebinding) sends its domain as `Host` and is refused with 421; a port forward to the admin port (`ssh -L`)
/// still works through `localhost:<its port>`.
pub async fn admin_host_check(
    State(bound): State<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(|host| is_admin_host(host, bound.ip())) {
        return next.run(req).await;
    }
    let error = Error::new(
        ErrorKind::NotAllowed,
        format!(
            "the operator endpoints answer only for {bound}, localhost, 127.0.0.1 or [::1], not for Host {}",
            host.unwrap_or("(none)")
        ),
    );
    respond_with_status(StatusCode::MISDIRECTED_REQUEST, &error)
}

/// Whether `host` (a `Host` header: name or address, optional port) names `bound` or the loopback.
fn is_admin_host(host: &str, bound: IpAddr) -> bool {
    let name = match host.rsplit_once(':') {
        // An IPv6 address is bracketed: its colons are inside the brackets.
        Some((name, port)) if !port.contains(']') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            name
        }
        _ => host,
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match ip.parse::<IpAddr>() {
        // Bound to every interface, the port answers at any of the machine's addresses; an address is never
        // what a rebound name sends.
        Ok(ip) => ip == bound || ip.is_loopback() || bound.is_unspecified(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_admin_host;
    use std::net::IpAddr;

    #[test]
    fn the_admin_port_answers_its_own_address_and_loopback_names_only() {
        let bound: IpAddr = "10.1.2.3".parse().unwrap();
        for ok in [
            "10.1.2.3:7071",
            "10.1.2.3",
            "localhost",
            "LocalHost:7071",
            "127.0.0.1:9000",
            "127.0.0.1",
            "[::1]:7071",
            "[::1]",
        ] {
            assert!(is_admin_host(ok, bound), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7071",
            "localhost.evil.example",
            "10.1.2.4:7071",
            "127.0.0.1:x",
            "[::2]:7071",
            "",
        ] {
            assert!(!is_admin_host(refused, bound), "{refused}");
        }
        let everywhere: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(is_admin_host("10.9.8.7:7071", everywhere));
        assert!(!is_admin_host("evil.example:7071", everywhere));
    }
}
