//! Layers around every route: request timing (every body says how long it took), CORS for browsers on other
//! origins, `Cross-Origin-Resource-Policy` for pages that isolate themselves, the body size limit, and a last guard
//! that turns a panic in a handler into a 500 error envelope instead of a dropped connection.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
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

/// The answer to a request whose handler panicked. No panic is expected; the engine's operations check their input
/// before changing state, and the hub recovers its lock, so the server keeps answering.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    crate::error::Error::internal("internal error while handling the request").into_response()
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
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(timed))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_with_the_error_envelope() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let app = super::around(Router::new().route("/boom", get(boom)));
        let res = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            res.headers()["cross-origin-resource-policy"],
            "cross-origin"
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let envelope: presence_protocol::ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope.status_code, 500);
        assert_eq!(
            envelope.code,
            presence_protocol::codes::error_code::INTERNAL
        );
        assert!(envelope.duration.ends_with("ms"), "{}", envelope.duration);
    }
}
