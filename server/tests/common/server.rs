//! The server under test: in this process on a loopback listener, the binary as a child process, or the router
//! alone (REST through `oneshot`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ServerOpts {
    pub dev_tokens: bool,
    pub grace_ms: u64,
    pub ping_ms: u64,
    pub pong_ms: u64,
    pub watch_implies_presence: bool,
    pub db: Option<PathBuf>,
    pub static_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// The `--api-secret` the server starts with; the server's own token helpers sign with it.
    pub api_secret: String,
    /// Serve the operator endpoints on a port of their own (`--admin-addr 127.0.0.1:0`), else `--admin-addr off`.
    pub admin: bool,
    /// `--max-channels-per-user`, when not the server's default.
    pub max_channels_per_user: Option<usize>,
    /// `--last-active-refresh-ms`, when not the server's default.
    pub last_active_refresh_ms: Option<u64>,
    /// More command-line arguments for the binary (a server started in-process takes none).
    pub args: Vec<String>,
    /// Start the binary with this open-file limit (`ulimit -n`), when set.
    pub open_files: Option<u64>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            dev_tokens: false,
            grace_ms: 1000,
            ping_ms: 5000,
            pong_ms: 10000,
            watch_implies_presence: false,
            db: None,
            static_dir: None,
            env: Vec::new(),
            api_secret: API_SECRET.to_string(),
            admin: true,
            max_channels_per_user: None,
            last_active_refresh_ms: None,
            args: Vec::new(),
            open_files: None,
        }
    }
}

impl ServerOpts {
    pub fn grace(mut self, ms: u64) -> Self {
        self.grace_ms = ms;
        self
    }
    pub fn ping(mut self, ping_ms: u64, pong_ms: u64) -> Self {
        self.ping_ms = ping_ms;
        self.pong_ms = pong_ms;
        self
    }
    pub fn dev_tokens(mut self) -> Self {
        self.dev_tokens = true;
        self
    }
    pub fn watch_implies_presence(mut self) -> Self {
        self.watch_implies_presence = true;
        self
    }
    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db = Some(path.into());
        self
    }
    pub fn static_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.static_dir = Some(path.into());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    pub fn api_secret(mut self, secret: &str) -> Self {
        self.api_secret = secret.to_string();
        self
    }
    pub fn admin_off(mut self) -> Self {
        self.admin = false;
        self
    }
    pub fn max_channels_per_user(mut self, max: usize) -> Self {
        self.max_channels_per_user = Some(max);
        self
    }
    pub fn last_active_refresh(mut self, ms: u64) -> Self {
        self.last_active_refresh_ms = Some(ms);
        self
    }
    /// Passes `flag value` to the binary.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
    /// Starts the binary with at most `n` open files.
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }
    /// Passes a flag without a value to the binary.
    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.to_string());
        self
    }
}

/// How a server process that was expected to refuse to start ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `presence-server` binary with exactly `args` (and `env` added to the test's environment, with every
/// `PRESENCE_*` variable of the test's own environment removed) and waits, bounded, for it to exit. Panics if it
/// is still running after 30 s, e.g. because it started serving instead of refusing.
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Exited {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_presence-server"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PRESENCE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{args:?}");
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn presence-server");
        let mut stdout_pipe = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout_pipe.read_to_string(&mut text);
            text
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "presence-server {shown} was still running after 30 s; stdout:\n{}",
                    stdout.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Exited {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    })
    .await
    .expect("server run task")
}

pub struct Server {
    /// Set when the server is the binary, running as a child process.
    child: Option<Child>,
    /// Set when the server is the router alone: calls go straight to it, no socket involved.
    pub(super) in_process: Option<InProcess>,
    /// Set when the server runs in this process on a loopback listener of its own.
    listening: Option<Listening>,
    pub port: u16,
    pub base: String,
    /// Where the operator endpoints answer (`--admin-addr`), unless they are off.
    pub admin_base: Option<String>,
    pub opts: ServerOpts,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Every line the server wrote to stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
    pub(super) http: reqwest::Client,
}

fn spawn_drain<R: Read + Send + 'static>(reader: R, sink: Option<Arc<Mutex<Vec<String>>>>) {
    std::thread::spawn(move || {
        let reader = BufReader::new(reader);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(sink) = &sink {
                let mut lines = sink.lock().unwrap();
                if lines.len() > 500 {
                    lines.remove(0);
                }
                lines.push(line);
            }
        }
    });
}

/// A server built in the test's process: the library's router over an in-memory (or file) database.
pub(super) struct InProcess {
    pub(super) router: axum::Router,
    pub(super) admin_router: axum::Router,
    _service: presence_server::Service,
}

/// A server serving in this process on its own thread and runtime, as the binary does: the library's service
/// behind `presence_server::serve` on loopback listeners. Dropping it shuts it down as SIGTERM would.
struct Listening {
    /// Sent (or dropped) to shut the server down: every socket is closed with 1001, then every write flushed.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// The settings the binary would run with for `opts`, or None when `opts` needs the binary itself: an
/// environment (its parsing is then part of the test), an open-file limit, or a flag the library has no
/// setting for (cluster mode, PostgreSQL).
fn in_process_settings(opts: &ServerOpts) -> Option<presence_server::Settings> {
    if !opts.env.is_empty() || opts.open_files.is_some() {
        return None;
    }
    let mut settings = presence_server::Settings {
        api_key: API_KEY.to_string(),
        api_secret: opts.api_secret.clone(),
        dev_tokens: opts.dev_tokens,
        static_dir: opts.static_dir.clone(),
        offline_grace: Duration::from_millis(opts.grace_ms),
        ping_interval: Duration::from_millis(opts.ping_ms),
        pong_timeout: Duration::from_millis(opts.pong_ms),
        watch_implies_presence: opts.watch_implies_presence,
        ..presence_server::Settings::default()
    };
    if let Some(max) = opts.max_channels_per_user {
        settings.max_channels_per_user = max;
    }
    if let Some(ms) = opts.last_active_refresh_ms {
        settings.last_active_refresh = Duration::from_millis(ms);
    }
    let mut args = opts.args.iter();
    while let Some(flag) = args.next() {
        let value = args.next()?;
        let n: u64 = value.parse().ok()?;
        let ms = Duration::from_millis(n);
        match flag.as_str() {
            "--send-queue-bytes" => settings.send_queue_bytes = n as usize,
            "--max-connections-per-user" => settings.max_connections_per_user = n as usize,
            "--max-channels-per-user" => settings.max_channels_per_user = n as usize,
            "--max-follows-per-connection" => settings.max_follows_per_connection = n as usize,
            "--max-http-connections" => settings.max_http_connections = n as usize,
            "--user-writes-per-minute" => settings.user_writes_per_minute = n as u32,
            "--user-write-burst" => settings.user_write_burst = n as u32,
            "--header-read-timeout-ms" => settings.header_read_timeout = ms,
            "--idle-timeout-ms" => settings.idle_timeout = ms,
            "--last-active-refresh-ms" => settings.last_active_refresh = ms,
            "--readmit-window-ms" => settings.readmit_window = ms,
            // In process, below the command line's floor of 30 s: the rule is the same at any scale.
            "--client-silence-ms" => settings.client_silence = ms,
            _ => return None,
        }
    }
    Some(settings)
}

/// What `main` does between opening the service and exiting, with listeners on free loopback ports: reports the
/// ports on `ready`, serves until `stop` fires (or its sender is dropped), then closes every socket and flushes.
async fn serve_in_process(
    settings: presence_server::Settings,
    db: String,
    admin: bool,
    ready: tokio::sync::oneshot::Sender<Result<(u16, Option<u16>), String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    let opened = async {
        let service = presence_server::Service::open(&settings, &db)
            .map_err(|e| format!("cannot open database {db}: {e}"))?;
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listener = bind().await.map_err(|e| e.to_string())?;
        let admin = match admin {
            true => Some(bind().await.map_err(|e| e.to_string())?),
            false => None,
        };
        Ok::<_, String>((service, listener, admin))
    }
    .await;
    let (service, listener, admin) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let admin_port = match &admin {
        Some(admin) => Some(admin.local_addr().map_err(|e| e.to_string())?.port()),
        None => None,
    };
    let _ = ready.send(Ok((port, admin_port)));
    let limits = presence_server::Service::serve_limits(&settings);
    let stop = async move {
        let _ = stop.await;
    };
    service
        .serve(listener, admin, limits, stop)
        .await
        .map_err(|e| e.to_string())
}

/// The HTTP client of a server under test: every wait bounded, and no pooled connection, so no request races the
/// server closing an idle one.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(ServerOpts::default()).await
    }

    /// A server in this process whose REST calls go through its router with `oneshot`; it opens no port, so
    /// WebSocket connections need `start`.
    pub async fn in_process() -> Server {
        Server::in_process_with(ServerOpts::default()).await
    }

    pub async fn in_process_with(opts: ServerOpts) -> Server {
        assert!(
            opts.env.is_empty() && opts.args.is_empty(),
            "an in-process server takes no environment and no arguments"
        );
        let settings = in_process_settings(&opts).expect("settings without flags");
        let db = opts
            .db
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| ":memory:".to_string());
        let service = presence_server::Service::open(&settings, &db).expect("open the service");
        let router = service.router();
        let admin_router = service.admin_router();
        let admin_base = opts
            .admin
            .then(|| "http://in-process-admin.invalid".to_string());
        Server {
            child: None,
            in_process: Some(InProcess {
                router,
                admin_router,
                _service: service,
            }),
            listening: None,
            port: 0,
            base: "http://in-process.invalid".to_string(),
            admin_base,
            opts,
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::new(),
        }
    }

    /// A server on a free loopback port: in this process when the binary is not needed for `opts` (see
    /// `in_process_settings`), else the binary (`Server::binary`).
    pub async fn start_with(opts: ServerOpts) -> Server {
        match in_process_settings(&opts) {
            Some(settings) => Server::listen_in_process(opts, settings).await,
            None => Server::binary(opts).await,
        }
    }

    /// The `presence-server` binary as a child process: for tests of the process itself (signals, exit codes,
    /// crashes, restarts, its command line and environment, its output).
    pub async fn binary(opts: ServerOpts) -> Server {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || Server::spawn_blocking(o))
            .await
            .expect("server start task")
    }

    async fn listen_in_process(opts: ServerOpts, settings: presence_server::Settings) -> Server {
        let db = opts
            .db
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| ":memory:".to_string());
        let admin = opts.admin;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("presence-server".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the runtime: {e}"))?;
                runtime.block_on(serve_in_process(settings, db, admin, ready_tx, stop_rx))
            })
            .expect("spawn the server thread");
        let (port, admin_port) = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await
        {
            Ok(Ok(Ok(ports))) => ports,
            Ok(Ok(Err(e))) => panic!("the server did not start: {e}"),
            Ok(Err(_)) => panic!(
                "the server thread ended before listening: {:?}",
                thread.join()
            ),
            Err(_) => panic!("the server was not listening within 30 s"),
        };
        let http = http_client();
        Server {
            child: None,
            in_process: None,
            listening: Some(Listening {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            port,
            base: format!("http://127.0.0.1:{port}"),
            admin_base: admin_port.map(|p| format!("http://127.0.0.1:{p}")),
            opts,
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Arc::new(Mutex::new(Vec::new())),
            http,
        }
    }

    /// Shuts an in-process server down as SIGTERM shuts the binary down (sockets closed with 1001, every write
    /// flushed) and waits, bounded, until it has.
    pub async fn shut_down(&mut self) {
        let mut listening = self
            .listening
            .take()
            .expect("shut_down is for a server in this process; the binary takes `terminate`");
        drop(listening.stop.take());
        let thread = listening.thread.take().unwrap();
        let joined = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .expect("the server did not stop within 15 s");
        match joined.expect("join task") {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the server stopped with an error: {e}"),
            Err(_) => panic!("the server thread panicked"),
        }
    }

    fn spawn_blocking(opts: ServerOpts) -> Server {
        let bin = env!("CARGO_BIN_EXE_presence-server");
        let mut cmd = match opts.open_files {
            // The shell lowers the limit, then becomes the server (same pid).
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", &format!("ulimit -n {n}; exec \"$0\" \"$@\""), bin]);
                cmd
            }
            None => Command::new(bin),
        };
        let db = opts
            .db
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| ":memory:".to_string());
        cmd.args(["--addr", "127.0.0.1:0", "--db", &db])
            .args(["--api-key", API_KEY, "--api-secret", &opts.api_secret])
            .args(["--offline-grace-ms", &opts.grace_ms.to_string()])
            .args(["--ping-interval-ms", &opts.ping_ms.to_string()])
            .args(["--pong-timeout-ms", &opts.pong_ms.to_string()])
            .args([
                "--admin-addr",
                if opts.admin { "127.0.0.1:0" } else { "off" },
            ]);
        if let Some(max) = opts.max_channels_per_user {
            cmd.args(["--max-channels-per-user", &max.to_string()]);
        }
        if let Some(ms) = opts.last_active_refresh_ms {
            cmd.args(["--last-active-refresh-ms", &ms.to_string()]);
        }
        if opts.dev_tokens {
            cmd.arg("--dev-tokens");
        }
        if opts.watch_implies_presence {
            cmd.arg("--watch-implies-presence");
        }
        if let Some(dir) = &opts.static_dir {
            cmd.arg("--static-dir").arg(dir);
        }
        cmd.args(&opts.args);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn presence-server");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        spawn_drain(child.stderr.take().unwrap(), Some(stderr.clone()));

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel::<String>();
        // The public address comes first, then the admin one (when on).
        let wanted = if opts.admin { 2 } else { 1 };
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stdout_lines);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut found = 0;
            while found < wanted {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        lines.lock().unwrap().push(line.trim_end().to_string());
                        if line.starts_with("listening on ")
                            || line.starts_with("admin listening on ")
                        {
                            let _ = tx.send(line.trim().to_string());
                            found += 1;
                        }
                    }
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for line in reader.lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        });

        let mut next_line = |what: &str| match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "presence-server did not print `{what}http://...` within 30 s; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        let port = listening_port(&next_line("listening on "), "listening on ");
        let admin_base = opts.admin.then(|| {
            let line = next_line("admin listening on ");
            let admin_port = listening_port(&line, "admin listening on ");
            assert_ne!(admin_port, port, "{line}");
            format!("http://127.0.0.1:{admin_port}")
        });
        let http = http_client();
        Server {
            child: Some(child),
            in_process: None,
            listening: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            admin_base,
            opts,
            stderr,
            stdout: stdout_lines,
            http,
        }
    }

    /// The binary's child process, running.
    fn child(&mut self) -> Child {
        self.child
            .take()
            .expect("a running binary (start it with `Server::binary`)")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a running binary (start it with `Server::binary`)")
            .id()
    }

    /// The last lines the server wrote to stderr (for failure messages).
    pub fn stdout_lines(&self) -> Vec<String> {
        assert!(
            self.listening.is_none() && self.in_process.is_none(),
            "a server in this process writes no output of its own (start it with `Server::binary`)"
        );
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_tail(&self) -> String {
        assert!(
            self.listening.is_none() && self.in_process.is_none(),
            "a server in this process writes no log of its own (start it with `Server::binary`)"
        );
        let lines = self.stderr.lock().unwrap();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }

    /// SIGKILL, as a crash: the process ends at once, with no shutdown of any kind.
    pub async fn kill(&mut self) {
        let mut child = self.child();
        tokio::task::spawn_blocking(move || {
            child.kill().expect("kill -9 the server");
            child.wait().expect("wait for the killed server")
        })
        .await
        .unwrap();
    }

    /// SIGTERM, then wait (bounded) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM").await
    }

    /// SIGINT (Ctrl-C), then wait (bounded) for the process to exit.
    pub async fn interrupt(&mut self) -> ExitStatus {
        self.signal("INT").await
    }

    async fn signal(&mut self, name: &'static str) -> ExitStatus {
        let mut child = self.child();
        tokio::task::spawn_blocking(move || {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{name} failed");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("presence-server did not exit within 15 s of SIG{name}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

fn listening_port(line: &str, prefix: &str) -> u16 {
    let url = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected `{prefix}...`, got {line:?}"))
        .trim();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected listening line: {line:?}"))
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("no port in listening line {line:?}"));
    assert_ne!(port, 0, "the server must print the port it actually bound");
    port
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
