//! `presence-server` as a library: a Stream Chat v1 compatible presence server (REST + WebSocket, SQLite storage).
//!
//! [`Service::open`] opens storage and starts the driver; [`app`] is the axum router over it, which the binary
//! serves and tests can drive in-process.

mod app;
pub mod auth;
mod db;
mod error;
mod fields;
mod filter;
mod hub;
mod model;
mod rest;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub use crate::app::App;
use crate::app::Config;
use crate::auth::TokenVerifier;
use crate::hub::{Hub, HubConfig};

/// Largest REST body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// Everything the server needs to know besides where its data lives.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The app's API key; requests must carry it as `api_key`.
    pub api_key: String,
    /// Signs and checks HS256 tokens.
    pub api_secret: String,
    /// Accept development tokens (signature `devtoken`).
    pub dev_tokens: bool,
    /// Serve this folder's files at `/`.
    pub static_dir: Option<PathBuf>,
    /// How long a user whose last connection ended abnormally still counts as online.
    pub offline_grace: Duration,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// A connection silent this long is closed with 4002.
    pub pong_timeout: Duration,
    /// Any watch of a channel subscribes to its members' presence.
    pub watch_implies_presence: bool,
    /// Open connections one user may hold; one more is refused with code 71.
    pub max_connections_per_user: usize,
    /// Frames a connection may have queued before it is closed as too slow (4003).
    pub send_queue: usize,
}

/// Why the service could not start.
#[derive(Debug)]
pub struct OpenError(String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

/// Storage opened and the driver running: what the router serves.
pub struct Service {
    app: Arc<App>,
    hub: Arc<Hub>,
    writer: Option<JoinHandle<()>>,
    /// Users and channels found in storage at start.
    pub loaded_users: usize,
    pub loaded_channels: usize,
}

impl Service {
    /// Opens the SQLite database at `db` (`:memory:` keeps everything in memory) and starts the driver.
    /// Must be called inside a tokio runtime.
    pub fn open(settings: &Settings, db: &str) -> Result<Service, OpenError> {
        let (handle, loaded, writer) =
            db::open(db).map_err(|e| OpenError(format!("cannot open database {db}: {e}")))?;
        let (loaded_users, loaded_channels) = (loaded.users.len(), loaded.channels.len());
        let hub = Hub::new(
            HubConfig {
                offline_grace: settings.offline_grace,
                watch_implies_presence: settings.watch_implies_presence,
                max_connections_per_user: settings.max_connections_per_user,
            },
            handle,
            loaded,
        );
        let app = Arc::new(App {
            config: Config {
                api_key: settings.api_key.clone(),
                ping_interval: settings.ping_interval,
                pong_timeout: settings.pong_timeout,
                send_queue: settings.send_queue.max(1),
                static_dir: settings.static_dir.clone(),
            },
            verifier: TokenVerifier::new(&settings.api_secret, settings.dev_tokens),
            hub: Arc::clone(&hub),
        });
        Ok(Service {
            app,
            hub,
            writer: Some(writer),
            loaded_users,
            loaded_channels,
        })
    }

    /// The router serving this service.
    pub fn router(&self) -> Router {
        app(Arc::clone(&self.app))
    }

    /// A handle that asks every open connection to close (1001), stamping `last_active` of everyone connected.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.hub))
    }

    /// Waits until every write is durable, then stops the storage writer.
    pub async fn close(mut self) -> Result<(), OpenError> {
        let flushed = self.hub.flush().await;
        drop(self.app);
        drop(self.hub);
        drop(self.writer.take());
        flushed.map_err(|e| OpenError(e.message))
    }
}

/// Starts the shutdown of a [`Service`]: closes every connection with 1001.
pub struct ShutdownHandle(Arc<Hub>);

impl ShutdownHandle {
    pub fn shut_down(&self) {
        self.0.shutdown();
    }
}

/// The HTTP and WebSocket API over the server's state.
pub fn app(app: Arc<App>) -> Router {
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
