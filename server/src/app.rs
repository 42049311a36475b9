//! The server's shared state and its router.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::TokenVerifier;
use crate::hub::Hub;
use crate::{rest, ws};

/// Largest REST body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

pub struct Config {
    pub api_key: String,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub send_queue: usize,
    pub static_dir: Option<PathBuf>,
}

pub struct App {
    pub config: Config,
    pub verifier: TokenVerifier,
    pub hub: Arc<Hub>,
}

pub fn router(app: Arc<App>) -> Router {
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
    let static_dir = app.config.static_dir.clone();
    let api = Router::new()
        .route("/connect", get(ws::connect))
        .route(
            "/users",
            post(rest::upsert_users)
                .patch(rest::partial_update_users)
                .get(rest::query_users),
        )
        .route("/channels", post(rest::query_channels))
        .route("/channels/{type}/query", post(rest::query_distinct_channel))
        .route("/channels/{type}/{id}/query", post(rest::query_channel))
        .route(
            "/channels/{type}/{id}/stop-watching",
            post(rest::stop_watching),
        )
        .route("/healthz", get(rest::healthz))
        .route("/metrics", get(rest::metrics))
        .method_not_allowed_fallback(rest::method_not_allowed)
        .with_state(app);
    let api = match static_dir {
        Some(dir) => api.fallback_service(ServeDir::new(dir)),
        None => api.fallback(rest::not_found),
    };
    api.layer(axum::middleware::from_fn(rest::timed))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ))
}
