//! `presence-server`: a Stream Chat v1 compatible presence server (REST + WebSocket, SQLite or PostgreSQL
//! storage), and a token minting command for scripts and tests. The binary parses the command line, opens
//! storage and serves.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use presence_server::{auth, ClusterSettings, Service, Settings, StartupError, Storage};

#[derive(Parser)]
#[command(
    name = "presence-server",
    version,
    about = "User presence over the Stream Chat v1 wire protocol",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed token: a user token for USER_ID, or with --server a server-side token.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The user the token is for.
    #[arg(required_unless_present = "server")]
    user_id: Option<String>,
    /// Mint a server-side token (`{"server": true}`) instead of a user token.
    #[arg(long, conflicts_with = "user_id")]
    server: bool,
    #[arg(long, env = "PRESENCE_API_SECRET")]
    api_secret: String,
    /// Make the user token expire this many seconds from now.
    #[arg(long, env = "PRESENCE_TOKEN_EXP_SECS")]
    exp_secs: Option<i64>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "PRESENCE_ADDR", default_value = "127.0.0.1:7070")]
    addr: SocketAddr,
    /// Address of the operator endpoints (/metrics, /healthz), or `off`; port 0 picks a free port. Keep it private:
    /// the counts would tell when an invisible user connects. [default: 127.0.0.1:7071, skipped with a warning
    /// when that port is taken; an address given here that cannot be bound stops the start]
    #[arg(long, env = "PRESENCE_ADMIN_ADDR")]
    admin_addr: Option<AdminAddr>,
    /// SQLite database file, or :memory:. Ignored with --database-url.
    #[arg(long, env = "PRESENCE_DB", default_value = "presence.db")]
    db: String,
    /// Keep users, channels and members in this PostgreSQL database instead of SQLite
    /// (postgres://user:password@host:port/database); its schema is migrated at start.
    #[arg(long, env = "PRESENCE_DATABASE_URL")]
    database_url: Option<String>,
    /// The app's API key; requests must carry it as `api_key`.
    #[arg(long, env = "PRESENCE_API_KEY")]
    api_key: Option<String>,
    /// The app's API secret: signs and checks HS256 tokens; at least 16 bytes.
    #[arg(long, env = "PRESENCE_API_SECRET")]
    api_secret: Option<String>,
    /// Accept development tokens (signature `devtoken`). Never in production.
    #[arg(long, env = "PRESENCE_DEV_TOKENS")]
    dev_tokens: bool,
    /// Serve this folder's files at `/` (the demo page).
    #[arg(long, env = "PRESENCE_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// How long a user whose last connection ended abnormally still counts as online.
    #[arg(long, env = "PRESENCE_OFFLINE_GRACE_MS", default_value_t = 3000)]
    offline_grace_ms: u64,
    /// How often the server sends a WebSocket Ping to each connection.
    #[arg(long, env = "PRESENCE_PING_INTERVAL_MS", default_value_t = 5000)]
    ping_interval_ms: u64,
    /// A connection silent this long (no pong, no frame) is closed with 4002.
    #[arg(long, env = "PRESENCE_PONG_TIMEOUT_MS", default_value_t = 10000)]
    pong_timeout_ms: u64,
    /// A connection whose client sends no frame of its own for this long is closed with 4005 (a frozen tab,
    /// whose browser still answers pings): live clients send a health.check every 25 s, hidden tabs' throttled
    /// timers about once a minute. 0: never; otherwise at least 30000.
    #[arg(long, env = "PRESENCE_CLIENT_SILENCE_MS", default_value_t = 150_000)]
    client_silence_ms: u64,
    /// Any watch of a channel subscribes to its members' presence, even without `presence: true`.
    #[arg(long, env = "PRESENCE_WATCH_IMPLIES_PRESENCE")]
    watch_implies_presence: bool,
    /// Open connections one user may hold (tabs, devices); one more replaces the oldest that missed a pong
    /// (closed with 4002), or is refused with code 71 and close 1013.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS_PER_USER", default_value_t = 50)]
    max_connections_per_user: usize,
    /// Channels one user token may create (server tokens create any number); one more is refused with code 4.
    #[arg(long, env = "PRESENCE_MAX_CHANNELS_PER_USER", default_value_t = 1000)]
    max_channels_per_user: usize,
    /// Users one connection may follow through queryUsers with presence: true; a query that would take a
    /// connection beyond it is refused with code 4 and follows nobody.
    #[arg(
        long,
        env = "PRESENCE_MAX_FOLLOWS_PER_CONNECTION",
        default_value_t = 5000
    )]
    max_follows_per_connection: usize,
    /// Bytes of frames a connection may have queued before it is closed as too slow (4003).
    #[arg(long, env = "PRESENCE_SEND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    send_queue_bytes: usize,
    /// How old a connected user's stored last_active may grow before a health.check writes it again (what
    /// everyone reads is refreshed by every ping; connects and last disconnects are always written). A crash
    /// loses at most this much of the refresh.
    #[arg(long, env = "PRESENCE_LAST_ACTIVE_REFRESH_MS", default_value_t = 15 * 60 * 1000)]
    last_active_refresh_ms: u64,
    /// After a start, spread the return of the users who may have been connected when the previous process
    /// ended (their stored last_active is recent) over this long: while more than 50 a second would come back,
    /// connects beyond that pace are answered 429 (code 9) and the clients retry after their backoff. 0: no pacing.
    #[arg(long, env = "PRESENCE_READMIT_WINDOW_MS", default_value_t = 12_000)]
    readmit_window_ms: u64,
    /// User writes (POST/PATCH /users, member changes) one user token may make per minute, sustained; one more is
    /// answered 429 (code 9) with Retry-After and X-RateLimit-* headers. Server tokens are not limited. 0: no limit.
    #[arg(long, env = "PRESENCE_USER_WRITES_PER_MINUTE", default_value_t = 60)]
    user_writes_per_minute: u32,
    /// User writes one user token may make at once after a quiet spell (the bucket's size); at least 1.
    #[arg(long, env = "PRESENCE_USER_WRITE_BURST", default_value_t = 20)]
    user_write_burst: u32,
    /// A request's headers must arrive in full within this long of the connection opening or of the previous
    /// response, or the connection is closed (both ports); a request body stalled this long ends the request.
    #[arg(
        long,
        env = "PRESENCE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    header_read_timeout_ms: u64,
    /// An HTTP connection with no request in progress and nothing received for this long is closed (both ports).
    #[arg(long, env = "PRESENCE_IDLE_TIMEOUT_MS", default_value_t = 5_000)]
    idle_timeout_ms: u64,
    /// Connections (WebSockets included) the public port holds at once. At the cap a new connection replaces
    /// the oldest one with nothing in progress, or is answered 503 and closed. 0: the open-file limit less a
    /// reserve for the database, Redis and the admin port.
    #[arg(long, env = "PRESENCE_MAX_HTTP_CONNECTIONS", default_value_t = 0)]
    max_http_connections: usize,
    /// Where webhook events go (one signed POST per event), unless the app's settings name another URL (a
    /// server-token PATCH /app with webhook_url). Unset: no webhooks until PATCH /app sets one.
    #[arg(long, env = "PRESENCE_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The event types sent to webhooks, comma-separated.
    #[arg(
        long,
        env = "PRESENCE_WEBHOOK_EVENTS",
        default_value = "user.presence.changed,user.updated",
        value_delimiter = ','
    )]
    webhook_events: Vec<String>,
    /// One webhook attempt's limit; a receiver that has not answered by then is retried.
    #[arg(long, env = "PRESENCE_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000)]
    webhook_timeout_ms: u64,
    /// Webhook events waiting for delivery at most; past it the oldest is dropped (and counted).
    #[arg(long, env = "PRESENCE_WEBHOOK_OUTBOX_MAX", default_value_t = 1_000_000)]
    webhook_outbox_max: usize,
    /// Cluster mode: share presence, events and records with every other process on this Redis
    /// (redis://HOST:PORT).
    #[arg(long, env = "PRESENCE_REDIS_URL")]
    redis_url: Option<String>,
    /// This process's name in the cluster (letters, digits, `-`, `_`); random by default. A process started
    /// again with the same id first ends the connections its predecessor left.
    #[arg(long, env = "PRESENCE_NODE_ID", value_parser = parse_node_id)]
    node_id: Option<String>,
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 64 letters, digits, '-' or '_'".to_string())
    }
}

/// Where the operator endpoints listen, if anywhere.
#[derive(Clone, Copy)]
struct AdminAddr(Option<SocketAddr>);

/// The admin address when none is given: taken only if free, so that servers side by side on one host (tests,
/// several nodes) all start.
const DEFAULT_ADMIN_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7071,
));

/// Where the admin endpoints go: an address given (`--admin-addr`, its variable) must be bound, the default only
/// if it can be.
#[derive(Clone, Copy)]
enum AdminListen {
    Off,
    Given(SocketAddr),
    Default,
}

/// Why the server stopped: it could not start (nothing served), or it failed while serving (exit status 1).
enum Stop {
    Startup(StartupError),
    Failed(String),
}

impl From<StartupError> for Stop {
    fn from(e: StartupError) -> Self {
        Stop::Startup(e)
    }
}

impl std::str::FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(AdminAddr(None));
        }
        s.parse()
            .map(|addr| AdminAddr(Some(addr)))
            .map_err(|e| format!("expected HOST:PORT or off: {e}"))
    }
}

/// The shortest API secret the server starts with: shorter HS256 keys can be brute-forced from a single token.
const MIN_API_SECRET_BYTES: usize = 16;

/// The shortest client silence limit: live clients send a `health.check` 25 s after the last reply, so anything
/// shorter closes them. (Tabs hidden for over five minutes run their timers about once a minute: a limit under
/// two minutes closes those too, which is why the default is 150 s.)
const MIN_CLIENT_SILENCE_MS: u64 = 30_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => {
            let token = if args.server {
                auth::mint_server_token(&args.api_secret)
            } else {
                let exp = args
                    .exp_secs
                    .map(|secs| chrono::Utc::now().timestamp() + secs);
                auth::mint_user_token(&args.api_secret, args.user_id.as_deref().unwrap_or(""), exp)
            };
            println!("{token}");
            ExitCode::SUCCESS
        }
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Startup(e)) => {
            eprintln!("presence-server: {e}");
            ExitCode::from(e.exit_status())
        }
        Err(Stop::Failed(e)) => {
            eprintln!("presence-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings the flags give, or the first one that is wrong.
fn settings(args: &ServeArgs) -> Result<Settings, StartupError> {
    let wrong = |message: String| Err(StartupError::Setting(message));
    let (Some(api_key), Some(api_secret)) = (args.api_key.clone(), args.api_secret.clone()) else {
        return wrong(
            "--api-key and --api-secret are required (or PRESENCE_API_KEY / PRESENCE_API_SECRET)"
                .into(),
        );
    };
    if api_secret.len() < MIN_API_SECRET_BYTES {
        return wrong(format!(
            "--api-secret (PRESENCE_API_SECRET) must be at least {MIN_API_SECRET_BYTES} bytes, got {}; \
             a short HS256 secret lets anyone who sees one token guess it and sign their own",
            api_secret.len()
        ));
    }
    if args.ping_interval_ms == 0 || args.pong_timeout_ms < args.ping_interval_ms {
        return wrong(
            "--ping-interval-ms must be > 0 and --pong-timeout-ms at least as long".into(),
        );
    }
    if args.client_silence_ms != 0 && args.client_silence_ms < MIN_CLIENT_SILENCE_MS {
        return wrong(format!(
            "--client-silence-ms must be 0 (off) or at least {MIN_CLIENT_SILENCE_MS}: clients send a \
             health.check only every 25 s, so a shorter limit closes live connections"
        ));
    }
    if args.header_read_timeout_ms == 0 || args.idle_timeout_ms == 0 {
        return wrong("--header-read-timeout-ms and --idle-timeout-ms must be > 0".into());
    }
    if args.send_queue_bytes == 0 {
        return wrong("--send-queue-bytes must be > 0".into());
    }
    if args.user_write_burst == 0 {
        return wrong(
            "--user-write-burst must be > 0 (turn the limit off with --user-writes-per-minute 0)"
                .into(),
        );
    }
    if let Some(url) = &args.webhook_url {
        if let Err(e) = presence_server::check_webhook_url(url) {
            return wrong(format!("--webhook-url: {}", e.message()));
        }
    }
    const WEBHOOK_EVENTS: [&str; 2] = ["user.presence.changed", "user.updated"];
    if let Some(other) = args
        .webhook_events
        .iter()
        .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
    {
        return wrong(format!(
            "--webhook-events: {other:?} is not one of {}",
            WEBHOOK_EVENTS.join(", ")
        ));
    }
    if args.webhook_timeout_ms == 0 || args.webhook_outbox_max == 0 {
        return wrong("--webhook-timeout-ms and --webhook-outbox-max must be > 0".into());
    }
    Ok(Settings {
        api_key,
        api_secret,
        dev_tokens: args.dev_tokens,
        static_dir: args.static_dir.clone(),
        offline_grace: Duration::from_millis(args.offline_grace_ms),
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        pong_timeout: Duration::from_millis(args.pong_timeout_ms),
        client_silence: Duration::from_millis(args.client_silence_ms),
        watch_implies_presence: args.watch_implies_presence,
        max_connections_per_user: args.max_connections_per_user,
        max_channels_per_user: args.max_channels_per_user,
        max_follows_per_connection: args.max_follows_per_connection,
        send_queue_bytes: args.send_queue_bytes,
        last_active_refresh: Duration::from_millis(args.last_active_refresh_ms),
        readmit_window: Duration::from_millis(args.readmit_window_ms),
        user_writes_per_minute: args.user_writes_per_minute,
        user_write_burst: args.user_write_burst,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        max_http_connections: args.max_http_connections,
        webhook_url: args.webhook_url.clone(),
        webhook_events: args.webhook_events.clone(),
        webhook_timeout: Duration::from_millis(args.webhook_timeout_ms),
        webhook_outbox_max: args.webhook_outbox_max,
    })
}

fn start(args: ServeArgs) -> Result<(), Stop> {
    let settings = settings(&args)?;
    let runtime = tokio::runtime::Runtime::new().map_err(StartupError::Runtime)?;
    let cluster = match (args.redis_url, args.node_id) {
        (Some(redis_url), node_id) => Some(ClusterSettings {
            redis_url,
            node_id: node_id.unwrap_or_else(uuid_node_id),
        }),
        (None, Some(_)) => {
            return Err(StartupError::Setting("--node-id needs --redis-url".into()).into())
        }
        (None, None) => None,
    };
    let storage = match args.database_url {
        Some(url) => Storage::Postgres(url),
        None => Storage::Sqlite(args.db),
    };
    let admin = match args.admin_addr {
        None => AdminListen::Default,
        Some(AdminAddr(None)) => AdminListen::Off,
        Some(AdminAddr(Some(addr))) => AdminListen::Given(addr),
    };
    runtime.block_on(run(settings, args.addr, admin, storage, cluster))
}

/// A random node id: eight hex digits.
fn uuid_node_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

async fn run(
    settings: Settings,
    addr: SocketAddr,
    admin_addr: AdminListen,
    storage: Storage,
    cluster: Option<ClusterSettings>,
) -> Result<(), Stop> {
    let db = storage.describe();
    let service = match &cluster {
        Some(cluster) => {
            let service = Service::open_cluster(&settings, &storage, cluster).await?;
            tracing::info!(node = %cluster.node_id, "joined the cluster");
            service
        }
        None => match &storage {
            Storage::Sqlite(path) => Service::open(&settings, path),
            Storage::Postgres(url) => Service::open_postgres(&settings, url),
        }
        .map_err(|error| StartupError::Storage {
            db: db.clone(),
            error,
        })?,
    };
    tracing::info!(
        db = %db,
        users = service.loaded_users,
        channels = service.loaded_channels,
        "database loaded"
    );
    let listener = bind("--addr", addr).await?;
    let admin = match admin_addr {
        AdminListen::Off => None,
        AdminListen::Given(addr) => Some(bind("--admin-addr", addr).await?),
        AdminListen::Default => match bind("--admin-addr", DEFAULT_ADMIN_ADDR).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(
                    "{e}: running without the admin endpoints (/metrics); give --admin-addr to choose another \
                     address, or --admin-addr off"
                );
                None
            }
        },
    };
    println!("listening on http://{}", local_addr(&listener)?);
    if let Some(admin) = &admin {
        println!("admin listening on http://{}", local_addr(admin)?);
    }
    let _ = std::io::stdout().flush();
    let limits = Service::serve_limits(&settings);
    tracing::info!(
        max_connections = limits.max_connections,
        "HTTP connection limits set"
    );
    service
        .serve(listener, admin, limits, shutdown_signal())
        .await
        .map_err(|e| Stop::Failed(e.to_string()))
}

async fn bind(
    flag: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| StartupError::Listen { flag, addr, error })
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Stop> {
    listener
        .local_addr()
        .map_err(|e| Stop::Failed(format!("cannot read the bound address: {e}")))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
