//! `presence-server` as a library: a Stream Chat v1 compatible presence server (REST + WebSocket, SQLite or
//! PostgreSQL storage).
//!
//! A request or frame is authenticated at the edge (`http`, `ws`) and becomes a typed operation of the presence
//! engine (`presence`, no IO, no clock), appended to the log of the driver (`hub`): an in-process sequence, or
//! the cluster's stream on Redis (`cluster`). The driver applies the log in order; the engine's writes go to the
//! store (`store`), committed before anything else happens, then its deliveries and socket orders to the sockets
//! this process holds (`ws`). [`Service::open`] opens storage and starts the driver; [`Service::router`] is the
//! router over it, which the binary serves and tests can drive in-process.

mod admission;
pub mod auth;
mod cluster;
mod error;
mod http;
mod hub;
mod model;
mod presence;
pub mod serve;
mod startup;
mod state;
mod store;
mod webhook;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tower_http::services::ServeDir;

pub use crate::cluster::ClusterSettings;
pub use crate::error::{Error, ErrorKind};
use crate::hub::{Hub, LogChoice};
pub use crate::model::check_webhook_url;
pub use crate::startup::StartupError;
pub use crate::state::AppState;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
pub use crate::store::StoreError;
use crate::store::{Snapshot, Store};

/// What the fuzz targets (`fuzz/`) drive: the parsers of network input and the engine they feed. Re-exports only;
/// not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::TokenVerifier;
    pub use crate::presence::filter::{check_sort, compare, sort_cmp, sort_order, Fields, Filter};
    pub use crate::presence::{
        distinct_channel_key, Config, ConnId, Delivery, Ending, Engine, StateEvent, StateKey, View,
    };
    pub use crate::ws::{authenticate, read_client_frame, ClientFrame};
}

/// What the cluster ceiling benchmark (`server/examples/ceiling`) drives: the commands of the cluster log, the
/// log's Redis calls, and the driver applying entries as a node does. Re-exports only; not a stable API.
#[doc(hidden)]
pub mod ceiling {
    pub use crate::cluster::log::{append, decode, encode, read, RawEntry, LOG_KEY};
    pub use crate::hub::driver::{Driver, Input, StoreState, WallClock};
    pub use crate::hub::log::{Entry, LogPos};
    pub use crate::presence::command::Command;
    pub use crate::presence::{distinct_channel_key, Config, Engine};
    pub use crate::store::sqlite::SqliteStore;
}

/// What the store tests drive: the PostgreSQL store and the writes it commits, so two nodes' commits can be made
/// in an order other than the log's. Re-exports only; not a stable API.
#[doc(hidden)]
pub mod storage {
    pub use crate::model::{ChannelRecord, MemberRecord, Members, UserRecord, Write};
    pub use crate::store::postgres::PostgresStore;
    pub use crate::store::{Snapshot, Stamped, Store};
}

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
    /// A connection whose client sends no frame of its own (its `health.check`, every 25 s from a live client)
    /// for this long is closed with 4005, even while the browser still answers pings: a frozen tab goes offline.
    /// Zero: never.
    pub client_silence: Duration,
    /// Any watch of a channel subscribes to its members' presence.
    pub watch_implies_presence: bool,
    /// Open connections one user may hold; one more replaces the oldest that missed a pong, or is refused with
    /// code 71.
    pub max_connections_per_user: usize,
    /// Channels one user token may create; one more is refused with code 4.
    pub max_channels_per_user: usize,
    /// Users one connection may follow through `queryUsers` with `presence: true`; a query that would go beyond
    /// is refused with code 4.
    pub max_follows_per_connection: usize,
    /// Bytes of frames a connection may have queued before it is closed as too slow (4003).
    pub send_queue_bytes: usize,
    /// How old a connected user's stored `last_active` may grow before a `health.check` writes it again; the
    /// value everyone reads is refreshed by every ping regardless.
    pub last_active_refresh: Duration,
    /// Over how long the clients that may have been connected when the previous process ended are let back
    /// in after the start (zero: no pacing): a crowd larger than 50 connects a second over this window is let in
    /// at the pace that spreads it over the window, the others answered 429 (code 9) to retry.
    pub readmit_window: Duration,
    /// User writes (`POST`/`PATCH /users`) one user token may make per minute, sustained (0: no limit); one
    /// more is refused with 429 (code 9, `Retry-After`). Server tokens are not limited.
    pub user_writes_per_minute: u32,
    /// User writes one user token may make at once after a quiet spell.
    pub user_write_burst: u32,
    /// A request's headers must arrive in full within this long of the connection opening or of the previous
    /// response (on both ports); a request body stalled this long ends the request.
    pub header_read_timeout: Duration,
    /// An HTTP connection with no request in progress and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP connections (WebSockets included) the public port holds at once; 0: the open-file limit less a
    /// reserve for the database, Redis and the admin port.
    pub max_http_connections: usize,
    /// Where webhook events go unless the app's settings (`PATCH /app`) name another URL.
    pub webhook_url: Option<String>,
    /// The event types sent to webhooks.
    pub webhook_events: Vec<String>,
    /// One webhook attempt's limit.
    pub webhook_timeout: Duration,
    /// Webhook events waiting at most; past it the oldest is dropped (and counted).
    pub webhook_outbox_max: usize,
}

impl Default for Settings {
    /// The command line's defaults, with an empty key and secret for the caller to fill in.
    fn default() -> Self {
        Settings {
            api_key: String::new(),
            api_secret: String::new(),
            dev_tokens: false,
            static_dir: None,
            offline_grace: Duration::from_millis(3000),
            ping_interval: Duration::from_millis(5000),
            pong_timeout: Duration::from_millis(10_000),
            client_silence: Duration::from_millis(150_000),
            watch_implies_presence: false,
            max_connections_per_user: 50,
            max_channels_per_user: 1000,
            max_follows_per_connection: 5000,
            send_queue_bytes: 1024 * 1024,
            last_active_refresh: Duration::from_secs(15 * 60),
            readmit_window: Duration::from_secs(12),
            user_writes_per_minute: 60,
            user_write_burst: 20,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            max_http_connections: 0,
            webhook_url: None,
            webhook_events: vec![
                "user.presence.changed".to_string(),
                "user.updated".to_string(),
            ],
            webhook_timeout: Duration::from_secs(5),
            webhook_outbox_max: 1_000_000,
        }
    }
}

/// Where users, channels and members are kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A SQLite file (or `:memory:`).
    Sqlite(String),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl Storage {
    fn open(&self) -> Result<(Box<dyn Store>, Snapshot), StoreError> {
        Ok(match self {
            Storage::Sqlite(path) => {
                let (store, snapshot) = SqliteStore::open(path)?;
                (Box::new(store), snapshot)
            }
            Storage::Postgres(url) => {
                let (store, snapshot) = PostgresStore::open(url)?;
                (Box::new(store), snapshot)
            }
        })
    }

    /// The database's name for logs: a path, or a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Storage::Sqlite(path) => path.clone(),
            Storage::Postgres(url) => PostgresStore::describe(url),
        }
    }
}

/// Storage opened and the driver running: what the router serves.
pub struct Service {
    state: Arc<AppState>,
    /// The sockets this process holds, where the hub's deliveries land.
    sockets: Arc<ws::Outlets>,
    static_dir: Option<PathBuf>,
    /// Users and channels found in storage at start.
    pub loaded_users: usize,
    pub loaded_channels: usize,
}

impl Service {
    /// Opens the SQLite database at `db` (`:memory:` keeps everything in memory) and starts the driver on the
    /// in-process log.
    pub fn open(settings: &Settings, db: &str) -> Result<Service, StoreError> {
        let (store, snapshot) = SqliteStore::open(db)?;
        let (service, _) =
            Service::start(settings, Box::new(store), snapshot, LogChoice::Local, None)?;
        Ok(service)
    }

    /// Connects to the PostgreSQL database at `url` (migrating its schema) and starts the driver on the
    /// in-process log.
    pub fn open_postgres(settings: &Settings, url: &str) -> Result<Service, StoreError> {
        let (store, snapshot) = PostgresStore::open(url)?;
        let (service, _) =
            Service::start(settings, Box::new(store), snapshot, LogChoice::Local, None)?;
        Ok(service)
    }

    /// A node of the cluster on `cluster`'s Redis over `storage` (its own SQLite file, or the PostgreSQL database
    /// the nodes share): connects, replays the cluster log over the database and returns once this node is up to
    /// date with the others.
    pub async fn open_cluster(
        settings: &Settings,
        storage: &Storage,
        cluster: &ClusterSettings,
    ) -> Result<Service, StartupError> {
        let (store, snapshot) = storage.open().map_err(|error| StartupError::Storage {
            db: storage.describe(),
            error,
        })?;
        let node = cluster::Node::connect(cluster).await?;
        let (service, hub) = Service::start(
            settings,
            store,
            snapshot,
            LogChoice::Shared(Arc::clone(&node) as Arc<dyn hub::log::Log>),
            Some(&cluster.node_id),
        )
        .map_err(|error| StartupError::Storage {
            db: storage.describe(),
            error,
        })?;
        node.start(hub.log_sink()).await?;
        Ok(service)
    }

    fn start(
        settings: &Settings,
        mut store: Box<dyn Store>,
        mut snapshot: Snapshot,
        log: LogChoice,
        node: Option<&str>,
    ) -> Result<(Service, Arc<Hub>), StoreError> {
        let mut waiting = std::mem::take(&mut snapshot.outbox);
        if let Some(node) = node {
            store.set_node(node);
            // A store the nodes share holds every node's events: this node delivers its own (a restart).
            if store.shared() {
                waiting = store.adopt_outbox(node)?;
            }
        }
        let (committed_tx, committed) = tokio::sync::mpsc::unbounded_channel();
        let store = Box::new(webhook::Announcing::new(store, committed_tx));
        let (loaded_users, loaded_channels) = (snapshot.users.len(), snapshot.channels.len());
        let admission = admission::Admission::readmitting(
            returning_users(&snapshot, settings.last_active_refresh),
            settings.readmit_window,
            std::time::Instant::now(),
        );
        if admission.is_pacing() {
            tracing::info!(
                window_ms = settings.readmit_window.as_millis() as u64,
                "pacing the readmission of recently connected users"
            );
        }
        let sockets = Arc::new(ws::Outlets::default());
        let hub = Hub::start(
            presence::Config {
                offline_grace: settings.offline_grace,
                watch_implies_presence: settings.watch_implies_presence,
                max_connections_per_user: settings.max_connections_per_user,
                max_channels_per_user: settings.max_channels_per_user,
                last_active_refresh: settings.last_active_refresh,
                max_follows_per_connection: settings.max_follows_per_connection,
                distinct_channel_key: presence::distinct_channel_key(&settings.api_secret),
                webhook_url: settings.webhook_url.clone(),
                webhook_events: settings.webhook_events.clone(),
            },
            snapshot,
            store,
            Arc::clone(&sockets) as Arc<dyn hub::Sockets>,
            log,
        )?;
        let state = AppState::new(
            settings.api_key.clone(),
            auth::TokenVerifier::new(&settings.api_secret, settings.dev_tokens),
            settings.ping_interval,
            settings.pong_timeout,
            settings.send_queue_bytes,
            Arc::clone(&hub),
            admission,
        )
        .with_write_limits(http::rate::WriteLimits::new(
            settings.user_writes_per_minute,
            settings.user_write_burst,
        ))
        .with_client_silence(Some(settings.client_silence).filter(|s| !s.is_zero()));
        let state = state.with_webhook_events(settings.webhook_events.clone());
        let webhooks = Arc::clone(&state.webhooks);
        if tokio::runtime::Handle::try_current().is_ok() {
            webhook::spawn(
                webhook::WebhookSettings {
                    api_key: settings.api_key.clone(),
                    api_secret: settings.api_secret.clone(),
                    timeout: settings.webhook_timeout,
                    outbox_max: settings.webhook_outbox_max,
                },
                Arc::clone(&hub),
                waiting,
                committed,
                webhooks,
            );
        } else {
            tracing::warn!(
                "no async runtime: webhook events are kept in the outbox, not delivered"
            );
        }
        let service = Service {
            state: Arc::new(state),
            sockets,
            static_dir: settings.static_dir.clone(),
            loaded_users,
            loaded_channels,
        };
        Ok((service, hub))
    }

    /// The router serving this service.
    pub fn router(&self) -> Router {
        app(
            Arc::clone(&self.state),
            Arc::clone(&self.sockets),
            self.static_dir.clone(),
        )
    }

    /// The router of the operator endpoints, without a check of the `Host` they are asked for: for driving
    /// in-process. A socket serves [`Service::admin_router_bound_to`].
    pub fn admin_router(&self) -> Router {
        admin_app(Arc::clone(&self.state))
    }

    /// The router of the operator endpoints served at `bound`: it answers only requests for that address or a
    /// loopback name, so that a web page whose name was rebound to this machine cannot read them.
    pub fn admin_router_bound_to(&self, bound: std::net::SocketAddr) -> Router {
        admin_app(Arc::clone(&self.state)).layer(axum::middleware::from_fn_with_state(
            bound,
            http::ops::admin_host_check,
        ))
    }

    /// A handle that asks every open connection to close (1001), stamping `last_active` of everyone connected.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.state.hub))
    }

    /// Waits until every write is durable.
    pub async fn close(self) -> Result<(), Error> {
        self.state.hub.flush().await
    }

    /// The connection limits of the public port under `settings` (the admin port holds
    /// [`serve::ADMIN_MAX_CONNECTIONS`]).
    pub fn serve_limits(settings: &Settings) -> serve::ServeLimits {
        serve::ServeLimits {
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            max_connections: match settings.max_http_connections {
                0 => serve::derived_max_connections(),
                max => max,
            },
        }
    }

    /// Serves the API on `listener`, and the operator endpoints on `admin` if given, until `stop` resolves; then
    /// closes every connection with 1001, lets their close frames out and makes every write durable.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        admin: Option<tokio::net::TcpListener>,
        limits: serve::ServeLimits,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let admin = match admin {
            Some(listener) => {
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::internal(format!("cannot read the admin address: {e}")))?;
                let limits = serve::ServeLimits {
                    max_connections: serve::ADMIN_MAX_CONNECTIONS,
                    ..limits
                };
                Some(tokio::spawn(serve::serve(
                    listener,
                    self.admin_router_bound_to(bound),
                    limits,
                    std::future::pending(),
                )))
            }
            None => None,
        };
        let shutdown = self.shutdown_handle();
        serve::serve(listener, self.router(), limits, async move {
            stop.await;
            tracing::info!("shutting down");
            shutdown.shut_down();
        })
        .await;
        if let Some(admin) = admin {
            admin.abort();
        }
        // Let evicted connections send their close frames, then make every write durable.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.close().await
    }
}

/// Users who may have been connected when the previous process ended: a connected user's stored `last_active`
/// is at most one refresh period old (plus the time to the next `health.check`, within a minute).
fn returning_users(snapshot: &Snapshot, refresh: Duration) -> u64 {
    let margin = refresh + Duration::from_secs(60);
    let since = chrono::Duration::from_std(margin)
        .ok()
        .and_then(|margin| chrono::Utc::now().checked_sub_signed(margin));
    snapshot
        .users
        .iter()
        .filter(|u| {
            u.last_active
                .is_some_and(|at| since.is_none_or(|since| at >= since))
        })
        .count() as u64
}

/// Starts the shutdown of a [`Service`]: closes every connection with 1001.
pub struct ShutdownHandle(Arc<Hub>);

impl ShutdownHandle {
    pub fn shut_down(&self) {
        self.0.shutdown();
    }
}

/// The HTTP and WebSocket API over `state` and the `sockets` of this process, with `static_dir` (if any) served
/// at `/`.
fn app(state: Arc<AppState>, sockets: Arc<ws::Outlets>, static_dir: Option<PathBuf>) -> Router {
    let connect = move |app, query, upgrade| ws::connect(app, Arc::clone(&sockets), query, upgrade);
    let api = Router::new()
        .route("/connect", get(connect))
        .route("/app", get(http::app::get_app).patch(http::app::update_app))
        .route(
            "/users",
            post(http::users::upsert_users)
                .patch(http::users::partial_update_users)
                .get(http::users::query_users),
        )
        .route("/channels", post(http::channels::query_channels))
        .route(
            "/channels/{type}/query",
            post(http::channels::query_distinct_channel),
        )
        .route(
            "/channels/{type}/{id}",
            post(http::channels::update_channel),
        )
        .route(
            "/channels/{type}/{id}/query",
            post(http::channels::query_channel),
        )
        .route(
            "/channels/{type}/{id}/stop-watching",
            post(http::channels::stop_watching),
        )
        .route("/healthz", get(http::ops::healthz))
        .method_not_allowed_fallback(http::ops::method_not_allowed)
        .with_state(state);
    let api = match static_dir {
        Some(dir) => api.fallback_service(ServeDir::new(dir)),
        None => api.fallback(http::ops::not_found),
    };
    http::layers::around(api)
}

/// The operator endpoints: `/metrics` and `/healthz`. They belong on a separate, private address: counts of
/// connections and online users moving apart would tell anyone that an invisible user just connected.
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(http::ops::metrics))
        .route("/healthz", get(http::ops::healthz))
        .method_not_allowed_fallback(http::ops::method_not_allowed)
        .fallback(http::ops::not_found)
        .with_state(state)
}
