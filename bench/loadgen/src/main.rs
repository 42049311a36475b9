//! Load generator for the benchmarks (bench/fanout.mjs drives it): many WebSocket clients on loopback, each bound
//! to a source address of its own range (127.0.0.2, 127.0.0.3, ...) so that one run can exceed the ephemeral ports of
//! one address. Every command is bounded in time and prints one JSON object on stdout.
//!
//! - `fanout`: watchers follow one user's presence; the user flips (`invisible` on and off by partial update); the
//!   time from each flip to each watcher's receipt.
//! - `fanout --baseline`: the same watchers and bytes against `broadcast-server`, the limit of this machine.
//! - `broadcast-server`: a minimal tokio WebSocket broadcast: any text frame a client sends goes to every client.
//! - `fanout --server A,B,C`: the same with the watchers spread over cluster nodes round-robin.
//! - `capacity`: opens idle authenticated connections and reads the server's RSS per connection.
//! - `queryload`: idle probes time `health.check` round trips while clients loop unpinned queries over a large store.
//! - `restart`: clients and observers through a kill -9 and restart of the server on the same database.
//! - `churn`: clients connecting, leaving and going invisible at random while observers follow them all.
//! - `storm`: many users flip within a second while every watcher follows them all, with or without `batch_ms`.

mod churn;
mod fanout;
mod follow;
mod queryload;
mod restart;
mod storm;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Load generator for presence-server benchmarks (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fan-out latency: `watchers` connections follow one user whose presence flips `flips` times.
    Fanout {
        /// presence-server's base URL (http://127.0.0.1:PORT), or the broadcast server's with --baseline; a
        /// comma-separated list of cluster nodes spreads the watchers over them round-robin (the flipping user
        /// connects to, and is flipped through, the first).
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "bench-key")]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        #[arg(long, default_value_t = 10)]
        flips: usize,
        /// Target a `broadcast-server` instead of presence-server.
        #[arg(long)]
        baseline: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
    /// A minimal tokio WebSocket broadcast server; prints `listening on ws://ADDR`.
    BroadcastServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Idle capacity: opens `connections` authenticated connections and reads the RSS of process `pid`.
    Capacity {
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "bench-key")]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// The server's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// The number of the first connection (user `idle-N` and its source address), so that several
        /// generators can share one cluster without sharing users or source ports.
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// Once every connection is open, print `connected N in S s` on stderr and keep them open this many
        /// seconds longer (so that a caller can read several servers' memory while several generators hold).
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
    /// Queries under load: `probes` idle connections time `health.check` round trips while `loopers` clients
    /// loop unpinned queryUsers/queryChannels over `users` users and `channels` channels (seeded first).
    Queryload {
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "bench-key")]
        api_key: String,
        /// A server token (`presence-server token --server --api-secret ...`).
        #[arg(long)]
        server_token: String,
        #[arg(long, default_value_t = 50_000)]
        users: usize,
        #[arg(long, default_value_t = 5_000)]
        channels: usize,
        #[arg(long, default_value_t = 50)]
        probes: usize,
        #[arg(long, default_value_t = 8)]
        loopers: usize,
        /// How long the load runs, in seconds.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// The users and channels are already there.
        #[arg(long)]
        skip_seed: bool,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Crash and restart: `clients` connections and `observers` following them; the server (started here on a
    /// file database) is killed with SIGKILL and started again on the same database and address.
    Restart {
        /// The presence-server binary to start (twice).
        #[arg(long)]
        server_bin: std::path::PathBuf,
        /// The SQLite file the server runs on (created if missing).
        #[arg(long)]
        db: std::path::PathBuf,
        /// The address the server binds both times (a free loopback port if not given).
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[arg(long, default_value = "bench-key")]
        api_key: String,
        #[arg(long)]
        api_secret: String,
        /// A server token (`presence-server token --server --api-secret ...`).
        #[arg(long)]
        server_token: String,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        observers: usize,
        /// How long the server stays down between the kill and the restart, in milliseconds.
        #[arg(long, default_value_t = 0)]
        down_ms: u64,
        /// How long to wait for every client to be back, in seconds.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
    /// Churn soak: `clients` users connect, disconnect and go invisible and back at random for `secs` while
    /// `observers` follow them all; then views against the server's truth, event order, and the server's RSS.
    Churn {
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "bench-key")]
        api_key: String,
        /// A server token (`presence-server token --server --api-secret ...`).
        #[arg(long)]
        server_token: String,
        /// The server's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        observers: usize,
        /// How long the churn runs, in seconds.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Each client waits a uniform random time in [0, 2 × this] between its actions, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        mean_pause_ms: u64,
        /// The wait before each comparison, in seconds; longer than the server's offline grace window.
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
        /// The seed of the clients' random actions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Churn rounds on the same server, each ending with every client gone (RSS is read after each).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Presence storm: `users` users flip within `spread-ms` while `watchers` connections follow them all.
    Storm(storm::Args),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Fanout {
            server,
            api_key,
            watchers,
            flips,
            baseline,
            max_secs,
        } => {
            bounded(
                max_secs,
                fanout::fanout(server, api_key, watchers, flips, baseline),
            )
            .await
        }
        Command::BroadcastServer { addr, max_secs } => {
            bounded(max_secs, fanout::broadcast_server(addr)).await
        }
        Command::Capacity {
            server,
            api_key,
            connections,
            pid,
            first,
            hold_secs,
            max_secs,
        } => {
            let params = CapacityParams {
                server,
                api_key,
                connections,
                pid,
                first,
                hold_secs,
            };
            bounded(max_secs, capacity(params)).await
        }
        Command::Queryload {
            server,
            api_key,
            server_token,
            users,
            channels,
            probes,
            loopers,
            secs,
            skip_seed,
            max_secs,
        } => {
            let params = queryload::Params {
                server,
                api_key,
                server_token,
                users,
                channels,
                probes,
                loopers,
                secs,
                skip_seed,
            };
            bounded(max_secs, queryload::run(params)).await
        }
        Command::Restart {
            server_bin,
            db,
            addr,
            api_key,
            api_secret,
            server_token,
            clients,
            observers,
            down_ms,
            wait_secs,
            seed,
            max_secs,
        } => {
            let params = restart::Params {
                server_bin,
                db,
                addr,
                api_key,
                api_secret,
                server_token,
                clients,
                observers,
                down_ms,
                wait_secs,
                seed,
            };
            bounded(max_secs, restart::run(params)).await
        }
        Command::Churn {
            server,
            api_key,
            server_token,
            pid,
            clients,
            observers,
            secs,
            mean_pause_ms,
            settle_secs,
            seed,
            rounds,
            max_secs,
        } => {
            let params = churn::Params {
                rounds,
                server,
                api_key,
                server_token,
                pid,
                clients,
                observers,
                secs,
                mean_pause_ms,
                settle_secs,
                seed,
            };
            bounded(max_secs, churn::run(params)).await
        }
        Command::Storm(args) => bounded(args.max_secs, storm::run(args)).await,
    };
    match outcome {
        Ok(report) => println!("{report}"),
        Err(error) => {
            eprintln!("presence-loadgen: {error}");
            std::process::exit(1);
        }
    }
}

async fn bounded(
    secs: u64,
    work: impl std::future::Future<Output = Result<Value, Error>>,
) -> Result<Value, Error> {
    tokio::time::timeout(Duration::from_secs(secs), work)
        .await
        .map_err(|_| format!("did not finish within {secs} s"))?
}

// ---- clients ---------------------------------------------------------------------------------------------------

/// The source address of the n-th client: 127.0.0.2 and up, 10,000 clients each.
fn source_addr(n: usize) -> SocketAddr {
    let host = 2 + (n / 10_000).min(250) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0)
}

/// The read buffer a light client needs; the default (128 KiB) would dominate the generator's memory.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Lets `connect` pick the source port (IP_BIND_ADDRESS_NO_PORT) instead of `bind`: a bind to port 0 must find a
/// port no socket of that address holds, so once the earlier steps of a benchmark run have left the address's
/// ephemeral range in TIME_WAIT it fails with "Address already in use"; connect only needs the 4-tuple to be free,
/// and each step talks to a server on a port of its own.
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn open(url: &str, n: usize) -> Result<Socket, Error> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse()?;
    let host = uri.host().ok_or("no host in the URL")?;
    let port = uri.port_u16().ok_or("no port in the URL")?;
    let target: SocketAddr = format!("{host}:{port}").parse()?;
    let socket = TcpSocket::new_v4()?;
    bind_address_no_port(&socket)?;
    socket.bind(source_addr(n))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(stream),
        Some(client_config()),
    )
    .await?;
    Ok(ws)
}

/// The HTTP client of every command. A pooled connection idle for 2 s is not used again: the server closes
/// connections idle for 5 s, and a request sent on one just as it closes fails (`IncompleteMessage`), a race a
/// client avoids by giving up its idle connections first.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

fn dev_token(id: &str) -> String {
    const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    format!(
        "{HEADER}.{}.devtoken",
        base64(json!({ "user_id": id }).to_string().as_bytes())
    )
}

/// Standard base64 with padding, as `client.devToken()` writes the payload.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Opens an authenticated presence-server connection for `id`; returns it with its connection id.
async fn connect_user(
    server: &str,
    api_key: &str,
    id: &str,
    n: usize,
) -> Result<(Socket, String), Error> {
    let (ws, first) = connect_first_frame(server, api_key, id, n).await?;
    let connection_id = first["connection_id"]
        .as_str()
        .ok_or("no connection_id in the first frame")?
        .to_owned();
    Ok((ws, connection_id))
}

/// Opens an authenticated presence-server connection for `id` (`user_details` naming only the id, so that
/// nothing stored is overwritten); returns it with its first frame (`connection_id`, `me`).
async fn connect_first_frame(
    server: &str,
    api_key: &str,
    id: &str,
    n: usize,
) -> Result<(Socket, Value), Error> {
    connect_with(server, api_key, id, n, "").await
}

/// [`connect_first_frame`] with `extra` appended to the `/connect` query (such as `&batch_ms=10`).
async fn connect_with(
    server: &str,
    api_key: &str,
    id: &str,
    n: usize,
    extra: &str,
) -> Result<(Socket, Value), Error> {
    let ws_base = server.replacen("http", "ws", 1);
    let payload = json!({ "user_id": id, "user_details": { "id": id } }).to_string();
    let url = format!(
        "{ws_base}/connect?json={}&api_key={api_key}&authorization={}&stream-auth-type=jwt{extra}",
        percent_encode(&payload),
        percent_encode(&dev_token(id))
    );
    let mut ws = open(&url, n).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            let frame: Value = serde_json::from_str(text.as_str())?;
            if frame.get("error").is_some() {
                return Err(format!("{id}: connection refused: {text}").into());
            }
            if frame["connection_id"].as_str().is_none() {
                return Err(format!("{id}: no connection_id in the first frame").into());
            }
            return Ok((ws, frame));
        }
    }
    Err(format!("{id}: closed before the first frame").into())
}

/// Reads a socket to its end (pongs are answered by the reader), reporting each presence event's arrival.
fn spawn_reader(mut ws: Socket, arrivals: Option<mpsc::UnboundedSender<Instant>>) {
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let (Message::Text(text), Some(arrivals)) = (&message, &arrivals) {
                if text.as_str().contains("presence") {
                    let _ = arrivals.send(Instant::now());
                }
            }
        }
    });
}

/// Runs `count` connection attempts with at most `parallel` in flight; stops at the first failure.
async fn open_many<F, Fut, T>(count: usize, parallel: usize, make: F) -> Result<Vec<T>, Error>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let attempt = make(n);
        tasks.push(tokio::spawn(async move {
            let result = attempt.await;
            drop(permit);
            result
        }));
    }
    let mut out = Vec::with_capacity(count);
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

fn summary(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if values.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0), "count": values.len() })
}

// ---- capacity ----------------------------------------------------------------------------------------------------

fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or("no VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}

struct CapacityParams {
    server: String,
    api_key: String,
    connections: usize,
    pid: u32,
    first: usize,
    hold_secs: u64,
}

async fn capacity(p: CapacityParams) -> Result<Value, Error> {
    let CapacityParams {
        server,
        api_key,
        connections,
        pid,
        first,
        hold_secs,
    } = p;
    let rss_before = rss_bytes(pid)?;
    let started = Instant::now();
    open_many(connections, 128, |n| {
        let (server, api_key) = (server.clone(), api_key.clone());
        let n = first + n;
        async move {
            let (ws, _) = connect_user(&server, &api_key, &format!("idle-{n}"), n).await?;
            spawn_reader(ws, None);
            Ok(())
        }
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    if hold_secs > 0 {
        eprintln!("connected {connections} in {connect_secs:.3} s");
        tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    }
    // Let the server settle (first pings answered, buffers at rest) before reading its memory.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rss_after = rss_bytes(pid)?;
    Ok(json!({
        "connections": connections,
        "connect_secs": connect_secs,
        "connects_per_sec": connections as f64 / connect_secs,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_per_connection": (rss_after.saturating_sub(rss_before)) as f64 / connections as f64,
    }))
}
