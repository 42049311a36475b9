//! Layers around every route: request timing (every body says how long it took), CORS for browsers on other
//! origins, `Cross-Origin-Resource-Policy` for pages that isolate themselves, and the body size limit.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest REST body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

tokio::task_local! {
    static STARTED: Instant;
}

/// Runs a request with its start time at hand.
async fn timed(req: Request, next: Next) -> Response {
    STARTED.scope(Instant::now(), next.run(req)).await
}

/// The `duration` of the request being answered.
pub fn duration() -> String {
    STARTED
        .try_with(|s| format!("{:.2}ms", s.elapsed().as_secs_f64() * 1000.0))
        .unwrap_or_else(|_| "0.00ms".to_string())
}

/// Wraps a router in the layers every response goes through.
pub fn around(router: Router) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("stream-auth-type"),
            HeaderName::from_static("x-stream-client"),
            HeaderName::from_static("x-client-request-id"),
        ])
        .max_age(Duration::from_secs(600));
    router
        .layer(axum::middleware::from_fn(timed))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ))
}
