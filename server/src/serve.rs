//! The HTTP listener: accepts TCP connections and serves a router over them (HTTP/1.1, with upgrades),
//! bounding what a client that sends nothing useful can hold. A connection must deliver each request's headers
//! within the header read timeout, is closed when idle between requests for the idle timeout, and a stalled
//! request body ends the request. The connections of one listener are capped below the process's file limit;
//! at the cap a newcomer first takes the place of the oldest connection with nothing in progress (waiting for
//! its headers, or idle between requests), and is refused with a short 503 only when every connection is busy.
//! WebSockets and requests in progress are never evicted.

mod body;
mod registry;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use self::body::{InFlight, ProgressBody};
use self::registry::{ConnState, Registry, Slot};

/// How long the listener's connections may take and how many it holds.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A request's headers must arrive in full within this long of the connection opening or of the previous
    /// response; a request body that makes no progress for this long ends the request.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// Connections held at once (WebSockets included).
    pub max_connections: usize,
}

/// File descriptors kept out of the public listener's cap: the database (SQLite's files or PostgreSQL's pool),
/// Redis, the listeners, the runtime's own descriptors and the admin listener's connections.
pub const RESERVED_FILES: usize = 64 + ADMIN_MAX_CONNECTIONS;

/// Connections the operator endpoints hold at once: a scraper and a few people.
pub const ADMIN_MAX_CONNECTIONS: usize = 16;

/// The public listener's cap when none is configured: the process's open-file limit (`RLIMIT_NOFILE`, soft)
/// less [`RESERVED_FILES`], so that the database, Redis and the admin port still get descriptors when the
/// public port is full.
pub fn derived_max_connections() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    soft.saturating_sub(RESERVED_FILES).max(soft / 2).max(1)
}

fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the struct it is given and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut shutdown = pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    on_accept_error(&registry, &e, &mut last_accept_error).await;
                    continue;
                }
            },
        };
        // Frames are small and latency is the point: no Nagle delay behind an unacknowledged segment.
        let _ = tcp.set_nodelay(true);
        let Some(slot) = registry.admit(Arc::clone(&registry)) else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        let connection = Connection {
            builder: Arc::clone(&builder),
            router: router.clone(),
            limits,
            stopped: stopped.clone(),
        };
        tokio::spawn(connection.run(tcp, slot));
    }
    drop(listener);
    let _ = stop.send(true);
    drop(stopped);
    // Every connection task holds a receiver: this returns once the last one has finished.
    stop.closed().await;
}

/// Accept errors are not fatal: a full file table (EMFILE, ENFILE) frees a descriptor by evicting an idle
/// connection and pauses accepting briefly instead of spinning on the error.
async fn on_accept_error(registry: &Registry, e: &io::Error, last: &mut Option<Instant>) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    registry.evict_oldest_idle();
    let now = Instant::now();
    if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
        tracing::warn!(error = %e, "cannot accept a connection");
        *last = Some(now);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// The answer to a connection over the cap when no connection can make room: a 503 with the error envelope,
/// then the close. Written within a second; the request (if any) is read and discarded meanwhile, so that
/// closing with unread bytes does not reset the connection before the client reads the answer.
async fn refuse(mut tcp: TcpStream) {
    let error = crate::error::Error::internal("the server holds too many connections; retry later");
    let mut body = crate::http::error::envelope(&error);
    body.status_code = StatusCode::SERVICE_UNAVAILABLE.as_u16();
    body.duration = "0.00ms".to_string();
    let body = serde_json::to_string(&body).unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// One accepted connection's task.
struct Connection {
    builder: Arc<http1::Builder>,
    router: Router,
    limits: ServeLimits,
    stopped: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, slot: Slot) {
        let state = Arc::clone(slot.state());
        let io = TokioIo::new(TrackedIo {
            tcp: Some(tcp),
            state: Arc::clone(&state),
            slot: Some(slot),
        });
        let service = TowerToHyperService::new(Tracked {
            router: self.router,
            state: Arc::clone(&state),
            stall_timeout: self.limits.header_read_timeout,
        });
        let mut conn = pin!(self.builder.serve_connection(io, service).with_upgrades());
        let mut idle_deadline = Some(Instant::now() + self.limits.idle_timeout);
        let mut shutting_down = false;
        loop {
            let idle = async {
                match idle_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = conn.as_mut() => break,
                () = state.evicted() => break,
                () = state.became_idle() => {
                    idle_deadline = Some(Instant::now() + self.limits.idle_timeout);
                }
                () = idle => {
                    if state.is_idle_and_silent() {
                        break;
                    }
                    // Busy, or a request's headers are arriving (their own timeout runs): re-armed once idle.
                    idle_deadline = None;
                }
                changed = self.stopped.changed(), if !shutting_down => {
                    shutting_down = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The router as one connection's service: counts the requests in progress (a WebSocket upgrade stays in
/// progress for the socket's life), guards each request body against stalls, and closes the connection after
/// an answer given before the request's body was read.
#[derive(Clone)]
struct Tracked {
    router: Router,
    state: Arc<ConnState>,
    stall_timeout: Duration,
}

impl<B> Service<Request<B>> for Tracked
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(in_flight) = InFlight::start(&self.state) else {
            // Evicted between reading the headers and this call: the connection is closing.
            return Box::pin(async { Ok(closing_refusal()) });
        };
        let (req, body_read) = ProgressBody::wrap(req, self.stall_timeout);
        let mut router = self.router.clone();
        Box::pin(async move {
            let Ok(mut res) = router.call(req).await;
            if !body_read.load(Ordering::Acquire) {
                // The body was left unread: the connection cannot carry another request, and a client that
                // pools connections must be told so rather than find it closed on its next call.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.keep_forever();
                return Ok(res);
            }
            Ok(res.map(|body| Body::new(in_flight.until_sent(body))))
        })
    }
}

fn closing_refusal() -> Response<Body> {
    let error = crate::error::Error::internal("the connection is closing; retry on another");
    let mut res = crate::http::error::respond_with_status(StatusCode::SERVICE_UNAVAILABLE, &error);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// How long a closed connection that still had unread input is read and discarded before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// The accepted socket, holding its place in the registry for as long as it is open (through an upgrade
/// too), and recording that something was received since the connection last became idle.
struct TrackedIo {
    /// Taken only when the socket is dropped.
    tcp: Option<TcpStream>,
    state: Arc<ConnState>,
    slot: Option<Slot>,
}

impl TrackedIo {
    fn tcp(&mut self) -> &mut TcpStream {
        self.tcp.as_mut().expect("the socket is taken only on drop")
    }
}

/// A socket closed with input it never read would answer that input with a reset, and a client that is still
/// sending (a WebSocket frame over the size limit, a request body the server did not want) would lose the last
/// thing the server wrote, a close frame or an error, before reading it. Such a socket is closed for writing and
/// its input discarded for a moment (a lingering close) instead.
impl Drop for TrackedIo {
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else { return };
        let mut probe = [0u8; 1];
        if !matches!(tcp.try_read(&mut probe), Ok(n) if n > 0) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(linger(tcp, self.slot.take()));
    }
}

async fn linger(mut tcp: TcpStream, _slot: Option<Slot>) {
    let _ = tokio::time::timeout(LINGER, async {
        tcp.shutdown().await?;
        let mut sink = [0u8; 8192];
        while tcp.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(self.tcp()).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.heard();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.tcp()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.tcp()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|tcp| tcp.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.tcp()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.tcp()).poll_shutdown(cx)
    }
}
