//! Test harness: starts the real `presence-server` binary on a free port (or, for REST-only tests, builds the
//! server's router in this process and sends each call through it with `oneshot`), mints tokens, drives the REST
//! API with an HTTP client and the realtime API with a native WebSocket client. Every wait is bounded.
#![allow(dead_code)]

pub mod pg;
pub mod redis;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use presence_protocol::codes::{event_type, MORE_INFO_URL};
use presence_protocol::ApiError;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const API_KEY: &str = "test-api-key";
pub const API_SECRET: &str = "test-api-secret-0123456789abcdef";
/// The constant first segment of every dev token (`{"alg":"HS256","typ":"JWT"}`).
pub const DEV_TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Default wait for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// Default window during which something must not happen.
pub const QUIET: Duration = Duration::from_millis(700);

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
    child: Option<Child>,
    /// Set when the server runs in this process: calls go straight to its router, no socket involved.
    in_process: Option<InProcess>,
    pub port: u16,
    pub base: String,
    /// Where the operator endpoints answer (`--admin-addr`), unless they are off.
    pub admin_base: Option<String>,
    pub opts: ServerOpts,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Every line the server wrote to stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
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
struct InProcess {
    router: axum::Router,
    admin_router: axum::Router,
    _service: presence_server::Service,
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
        let settings = presence_server::Settings {
            api_key: API_KEY.to_string(),
            api_secret: opts.api_secret.clone(),
            dev_tokens: opts.dev_tokens,
            static_dir: opts.static_dir.clone(),
            offline_grace: Duration::from_millis(opts.grace_ms),
            ping_interval: Duration::from_millis(opts.ping_ms),
            pong_timeout: Duration::from_millis(opts.pong_ms),
            watch_implies_presence: opts.watch_implies_presence,
            max_channels_per_user: opts.max_channels_per_user.unwrap_or(1000),
            last_active_refresh: Duration::from_millis(
                opts.last_active_refresh_ms.unwrap_or(15 * 60 * 1000),
            ),
            readmit_window: Duration::from_secs(12),
            ..presence_server::Settings::default()
        };
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
            port: 0,
            base: "http://in-process.invalid".to_string(),
            admin_base,
            opts,
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::new(),
        }
    }

    pub async fn start_with(opts: ServerOpts) -> Server {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || Server::spawn_blocking(o))
            .await
            .expect("server start task")
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Server {
            child: Some(child),
            in_process: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            admin_base,
            opts,
            stderr,
            stdout: stdout_lines,
            http,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// The last lines the server wrote to stderr (for failure messages).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }

    /// SIGKILL, as a crash: the process ends at once, with no shutdown of any kind.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("server running");
        tokio::task::spawn_blocking(move || {
            child.kill().expect("kill -9 the server");
            child.wait().expect("wait for the killed server")
        })
        .await
        .unwrap();
    }

    /// SIGTERM, then wait (bounded) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        tokio::task::spawn_blocking(move || {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("presence-server did not exit within 15 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    // -- tokens ---------------------------------------------------------------------------------------------------

    pub fn user_token(&self, user_id: &str) -> String {
        sign_with(
            Algorithm::HS256,
            &self.opts.api_secret,
            &json!({ "user_id": user_id }),
        )
    }

    pub fn server_token(&self) -> String {
        sign_with(
            Algorithm::HS256,
            &self.opts.api_secret,
            &json!({ "server": true }),
        )
    }

    // -- REST -----------------------------------------------------------------------------------------------------

    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            admin: false,
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            api_key: Some(API_KEY.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    pub fn patch(&self, path: &str) -> Call<'_> {
        self.call(Method::PATCH, path)
    }

    /// `POST /users` with a server token; asserts 201 and returns the body.
    pub async fn upsert(&self, users: &[Value]) -> Value {
        let r = self.upsert_as(&Auth::Server, users).await;
        r.ok(201).clone()
    }

    pub async fn upsert_as(&self, auth: &Auth, users: &[Value]) -> Resp {
        let mut map = serde_json::Map::new();
        for u in users {
            let id = u["id"].as_str().expect("user id").to_string();
            map.insert(id, u.clone());
        }
        self.post("/users")
            .auth(auth)
            .json(json!({ "users": map }))
            .send()
            .await
    }

    /// `PATCH /users` with one update.
    pub async fn partial_update(&self, auth: &Auth, id: &str, set: Value, unset: &[&str]) -> Resp {
        self.patch("/users")
            .auth(auth)
            .json(json!({ "users": [{ "id": id, "set": set, "unset": unset }] }))
            .send()
            .await
    }

    /// `GET /users?payload=...`, bound to `conn` when given.
    pub async fn query_users(&self, auth: &Auth, conn: Option<&str>, payload: Value) -> Resp {
        self.get("/users")
            .auth(auth)
            .conn(conn)
            .query("payload", &payload.to_string())
            .send()
            .await
    }

    /// Ids of the users a server-token query returns, in order.
    pub async fn user_ids(&self, filter: Value) -> Vec<String> {
        self.user_ids_as(&Auth::Server, json!({ "filter_conditions": filter }))
            .await
    }

    pub async fn user_ids_as(&self, auth: &Auth, payload: Value) -> Vec<String> {
        let r = self.query_users(auth, None, payload).await;
        ids(&r.ok(200)["users"])
    }

    /// One user as `auth` sees it through queryUsers.
    pub async fn user_as(&self, auth: &Auth, id: &str) -> Value {
        let r = self
            .query_users(auth, None, json!({ "filter_conditions": { "id": id } }))
            .await;
        let users = r.ok(200)["users"].as_array().unwrap().clone();
        assert_eq!(users.len(), 1, "queryUsers for {id}: {users:?}");
        users[0].clone()
    }

    /// `POST /channels/{type}/{id}/query` (or the distinct-channel path when `id` is None).
    pub async fn query_channel(
        &self,
        auth: &Auth,
        conn: Option<&str>,
        ctype: &str,
        id: Option<&str>,
        body: Value,
    ) -> Resp {
        let path = match id {
            Some(id) => format!("/channels/{ctype}/{id}/query"),
            None => format!("/channels/{ctype}/query"),
        };
        self.post(&path)
            .auth(auth)
            .conn(conn)
            .json(body)
            .send()
            .await
    }

    /// Create a channel with members (server token), asserting 201.
    pub async fn create_channel(
        &self,
        ctype: &str,
        id: &str,
        members: &[&str],
        extra: Value,
    ) -> Value {
        let mut data = json!({ "members": members });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                data[k] = v;
            }
        }
        self.query_channel(
            &Auth::Server,
            None,
            ctype,
            Some(id),
            json!({ "data": data, "state": true }),
        )
        .await
        .ok(201)
        .clone()
    }

    /// Watch a channel on connection `ws` with `presence`, as its user; asserts 201.
    pub async fn watch(&self, ws: &Ws, ctype: &str, id: &str, presence: bool) -> Value {
        self.query_channel(
            &Auth::user(&ws.user_id),
            Some(&ws.connection_id),
            ctype,
            Some(id),
            json!({ "state": true, "watch": true, "presence": presence }),
        )
        .await
        .ok(201)
        .clone()
    }

    /// queryUsers with presence:true on connection `ws`, subscribing it to the users returned.
    pub async fn subscribe_users(&self, ws: &Ws, ids: &[&str]) -> Value {
        self.query_users(
            &Auth::user(&ws.user_id),
            Some(&ws.connection_id),
            json!({ "filter_conditions": { "id": { "$in": ids } }, "presence": true }),
        )
        .await
        .ok(200)
        .clone()
    }

    pub async fn query_channels(&self, auth: &Auth, conn: Option<&str>, body: Value) -> Resp {
        self.post("/channels")
            .auth(auth)
            .conn(conn)
            .json(body)
            .send()
            .await
    }

    pub async fn stop_watching(
        &self,
        auth: &Auth,
        conn: Option<&str>,
        ctype: &str,
        id: &str,
    ) -> Resp {
        self.post(&format!("/channels/{ctype}/{id}/stop-watching"))
            .auth(auth)
            .conn(conn)
            .json(json!({}))
            .send()
            .await
    }

    /// A call to the operator endpoints on the admin address (no API key).
    pub fn admin_call(&self, method: Method, path: &str) -> Call<'_> {
        assert!(
            self.admin_base.is_some(),
            "the server was started with --admin-addr off"
        );
        let mut call = self.call(method, path).no_api_key();
        call.admin = true;
        call
    }

    /// `GET /metrics` on the admin address.
    pub async fn metrics(&self) -> String {
        let r = self.admin_call(Method::GET, "/metrics").send().await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text);
        r.text
    }

    /// The value of an unlabelled metric (or the sum over its label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// Poll a metric until it equals `want` (bounded).
    pub async fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.metric(name).await;
            if v == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("metric {name} is {v}, expected {want}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // -- WebSocket ------------------------------------------------------------------------------------------------

    /// The `/connect` URL with the given query parameters, form-encoded like the SDK's `URLSearchParams`.
    pub fn ws_url(&self, params: &[(&str, &str)]) -> Url {
        let mut url = Url::parse(&format!("ws://127.0.0.1:{}/connect", self.port)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// The SDK's connect parameters for `user_id` with `details` and `token`.
    pub fn connect_params(user_id: &str, details: &Value, token: &str) -> Vec<(String, String)> {
        let payload = json!({
            "user_id": user_id,
            "user_details": details,
            "client_request_id": format!("req-{}", uuid_like()),
        });
        vec![
            ("json".into(), payload.to_string()),
            ("api_key".into(), API_KEY.into()),
            ("authorization".into(), token.into()),
            ("stream-auth-type".into(), "jwt".into()),
            (
                "X-Stream-Client".into(),
                "stream-chat-js-v9.53.0-node|client_bundle=node-cjs".into(),
            ),
        ]
    }

    /// Open a WebSocket with raw query parameters; no frame is consumed.
    pub async fn open_ws(&self, params: &[(String, String)], user_id: &str) -> Ws {
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = self.ws_url(&p);
        Ws::open(url.as_str(), user_id).await
    }

    /// Connect as `user_id` with a valid token and `user_details: {id}`; reads the first frame.
    pub async fn connect(&self, user_id: &str) -> Ws {
        self.connect_with(user_id, json!({ "id": user_id })).await
    }

    /// Connect as `user_id` with the given `user_details`; reads and checks the first `health.check` frame.
    pub async fn connect_with(&self, user_id: &str, details: Value) -> Ws {
        let token = self.user_token(user_id);
        self.connect_token(user_id, details, &token).await
    }

    /// Opens a connection the server is to refuse: returns the `connection.error` frame it sends first, and the
    /// socket, for its close.
    pub async fn refused_connect(&self, user_id: &str, details: &Value) -> (Value, Ws) {
        let params = Server::connect_params(user_id, details, &self.user_token(user_id));
        let mut ws = self.open_ws(&params, user_id).await;
        let frame = match ws.next(WAIT).await {
            Some(Incoming::Json(v)) => v,
            other => panic!("expected a connection.error frame, got {other:?}"),
        };
        assert_eq!(frame["type"], event_type::CONNECTION_ERROR, "{frame}");
        (frame, ws)
    }

    pub async fn connect_token(&self, user_id: &str, details: Value, token: &str) -> Ws {
        let params = Server::connect_params(user_id, &details, token);
        let mut ws = self.open_ws(&params, user_id).await;
        ws.handshake().await;
        ws
    }
}

/// The port of a `<prefix>http://127.0.0.1:PORT` line; panics on any other line or port 0.
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

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:x}-{n}")
}

/// Every user, by id, as a server token reads them.
pub async fn all_users(s: &Server) -> Value {
    let r = s
        .query_users(
            &Auth::Server,
            None,
            json!({ "filter_conditions": {}, "sort": [{ "field": "id", "direction": 1 }], "limit": 100 }),
        )
        .await;
    r.ok(200)["users"].clone()
}

/// Every channel with its data and sorted member ids, by cid.
pub async fn all_channels(s: &Server) -> Value {
    let r = s
        .query_channels(
            &Auth::Server,
            None,
            json!({ "filter_conditions": {}, "state": true, "limit": 30 }),
        )
        .await;
    let mut channels: Vec<Value> = r.ok(201)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut members: Vec<String> = c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["user_id"].as_str().unwrap().to_string())
                .collect();
            members.sort();
            let mut channel = c["channel"].clone();
            // Per-request fields, not stored state.
            if let Value::Object(m) = &mut channel {
                m.remove("own_capabilities");
            }
            json!({ "channel": channel, "members": members })
        })
        .collect();
    channels.sort_by_key(|c| c["channel"]["cid"].as_str().unwrap().to_string());
    Value::Array(channels)
}

/// The cids of a `queryChannels` answer, in order.
pub fn cids(body: &Value) -> Vec<String> {
    body["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("channels array in {body}"))
        .iter()
        .map(|c| c["channel"]["cid"].as_str().expect("cid").to_string())
        .collect()
}

/// Parse `name value` (or `name{labels} value`, summed) from Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(i) => &r[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------------------------

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// HS256 with the test secret.
pub fn sign(claims: &Value) -> String {
    sign_with(Algorithm::HS256, API_SECRET, claims)
}

pub fn sign_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode jwt")
}

/// A token with an arbitrary header, payload and signature segment (no signing).
pub fn raw_token(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes(), URL_ALPHABET, false),
        b64(payload.to_string().as_bytes(), URL_ALPHABET, false),
        signature
    )
}

/// Correctly HS256-sign arbitrary (possibly malformed) header and payload segments.
pub fn sign_segments(header_seg: &str, payload_seg: &str) -> String {
    let message = format!("{header_seg}.{payload_seg}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(API_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("hmac");
    format!("{message}.{sig}")
}

/// `client.devToken(id)` exactly as the SDK builds it: standard base64 with padding, signature `devtoken`.
pub fn dev_token(user_id: &str) -> String {
    let payload = json!({ "user_id": user_id }).to_string();
    format!(
        "{DEV_TOKEN_HEADER}.{}.devtoken",
        b64(payload.as_bytes(), STD_ALPHABET, true)
    )
}

const STD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64url(data: &[u8]) -> String {
    b64(data, URL_ALPHABET, false)
}

// ---------------------------------------------------------------------------------------------------------------
// REST calls
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum Auth {
    /// A server-side token (`{"server": true}`).
    Server,
    /// A valid user token for this id, plus `user_id=<id>` in the query like the SDK.
    User(String),
    /// This exact `Authorization` header with `stream-auth-type: jwt`.
    Token(String),
    /// No `Authorization` header, `stream-auth-type: jwt`.
    Missing,
}

impl Auth {
    pub fn user(id: &str) -> Auth {
        Auth::User(id.to_string())
    }
}

pub struct Call<'a> {
    server: &'a Server,
    /// Sent to the admin address instead of the public one.
    admin: bool,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    api_key: Option<String>,
}

impl Call<'_> {
    pub fn auth(mut self, auth: &Auth) -> Self {
        let token = match auth {
            Auth::Server => Some(self.server.server_token()),
            Auth::User(id) => {
                self.query.push(("user_id".into(), id.clone()));
                Some(self.server.user_token(id))
            }
            Auth::Token(t) => Some(t.clone()),
            Auth::Missing => None,
        };
        if let Some(t) = token {
            self.headers.push(("Authorization".into(), t));
        }
        self.headers.push(("stream-auth-type".into(), "jwt".into()));
        self
    }

    pub fn conn(mut self, conn: Option<&str>) -> Self {
        if let Some(c) = conn {
            self.query.push(("connection_id".into(), c.to_string()));
        }
        self
    }

    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    /// A raw body sent as `application/json`.
    pub fn raw_json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    pub async fn send(self) -> Resp {
        let base = match (self.admin, &self.server.admin_base) {
            (true, Some(admin)) => admin.as_str(),
            _ => self.server.base.as_str(),
        };
        let mut url = Url::parse(&format!("{base}{}", self.path)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            if let Some(key) = &self.api_key {
                q.append_pair("api_key", key);
            }
        }
        let desc = format!("{} {}", self.method, url);
        if let Some(in_process) = &self.server.in_process {
            return self.send_in_process(in_process, url, desc).await;
        }
        let mut req = self.server.http.request(self.method.clone(), url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header(
            "X-Stream-Client",
            "stream-chat-js-v9.53.0-node|client_bundle=node-cjs",
        );
        req = req.header("x-client-request-id", uuid_like());
        if let Some(b) = self.body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{desc}: request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{desc}: reading body failed: {e}"));
        Resp::new(desc, status, headers, text)
    }
}

impl Call<'_> {
    /// The same request, through the in-process router instead of a socket.
    async fn send_in_process(self, server: &InProcess, url: Url, desc: String) -> Resp {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder()
            .method(self.method.clone())
            .uri(url.as_str());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req
            .header(
                "X-Stream-Client",
                "stream-chat-js-v9.53.0-node|client_bundle=node-cjs",
            )
            .header("x-client-request-id", uuid_like());
        let body = match self.body {
            Some(b) => {
                req = req.header("content-length", b.len().to_string());
                axum::body::Body::from(b)
            }
            None => axum::body::Body::empty(),
        };
        let req = req
            .body(body)
            .unwrap_or_else(|e| panic!("{desc}: cannot build the request: {e}"));
        let router = if self.admin {
            server.admin_router.clone()
        } else {
            server.router.clone()
        };
        let resp = tokio::time::timeout(Duration::from_secs(20), router.oneshot(req))
            .await
            .unwrap_or_else(|_| panic!("{desc}: no answer within 20 s"))
            .unwrap_or_else(|e| match e {});
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{desc}: reading body failed: {e}"));
        let text = String::from_utf8(bytes.to_vec())
            .unwrap_or_else(|e| panic!("{desc}: body is not UTF-8: {e}"));
        Resp::new(desc, status, headers, text)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub desc: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// An answer, with its body parsed as JSON when it is JSON (else `Value::Null`).
    fn new(desc: String, status: u16, headers: HeaderMap, text: String) -> Resp {
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            desc,
            status,
            headers,
            text,
            json,
        }
    }

    /// Assert the status and a JSON object body with a string `duration`; return the body.
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected HTTP {status}, got {} with body {}",
            self.desc, self.status, self.text
        );
        assert!(
            self.json["duration"].is_string(),
            "{}: success body without string `duration`: {}",
            self.desc,
            self.text
        );
        &self.json
    }

    /// Assert a complete error envelope with this HTTP status and code; return it.
    pub fn err(&self, status: u16, code: i64) -> ApiError {
        assert_eq!(
            (self.status, self.json["code"].as_i64()),
            (status, Some(code)),
            "{}: expected HTTP {status} with code {code}, got HTTP {} with body {}",
            self.desc,
            self.status,
            self.text
        );
        assert_error_envelope(&self.json, status, code, &self.desc);
        serde_json::from_value(self.json.clone()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }
}

/// Every field the OpenAPI `APIError` requires, with the right types and values.
pub fn assert_error_envelope(v: &Value, status: u16, code: i64, what: &str) {
    assert_eq!(v["code"].as_i64(), Some(code), "{what}: code in {v}");
    assert_eq!(
        v["StatusCode"].as_u64(),
        Some(status as u64),
        "{what}: StatusCode in {v}"
    );
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message in {v}"
    );
    assert!(v["duration"].is_string(), "{what}: duration in {v}");
    assert_eq!(
        v["more_info"].as_str(),
        Some(MORE_INFO_URL),
        "{what}: more_info in {v}"
    );
    assert!(
        v["details"]
            .as_array()
            .is_some_and(|d| d.iter().all(|x| x.is_i64())),
        "{what}: details must be an array of integers in {v}"
    );
}

pub fn ids(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of users, got {users}"))
        .iter()
        .map(|u| u["id"].as_str().expect("user id").to_string())
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Parse an RFC 3339 time.
pub fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------------------------

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone)]
pub enum Incoming {
    Json(Value),
    NotJson(String),
    Binary(usize),
    Ping,
    /// A close frame: its code (None when it carried none) and reason.
    Close(Option<u16>, String),
    /// The stream ended (EOF or error) after or without a close frame.
    Ended(String),
}

/// How a connection ended, as seen by the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// A close frame arrived with this code (None: a close frame without a code).
    Frame(Option<u16>),
    /// The stream ended without a close frame.
    NoFrame,
}

pub struct Ws {
    pub user_id: String,
    pub connection_id: String,
    /// The first frame (`health.check`).
    pub first: Value,
    rx: mpsc::UnboundedReceiver<Incoming>,
    sink: SplitSink<WsStream, Message>,
    pause: watch::Sender<bool>,
    reader: JoinHandle<()>,
    pub pings: usize,
    closed: Option<Closed>,
    /// Frames skipped by `wait_for`, handed out again (in order) by later reads.
    backlog: std::collections::VecDeque<Incoming>,
}

async fn read_loop(
    mut stream: SplitStream<WsStream>,
    tx: mpsc::UnboundedSender<Incoming>,
    mut pause: watch::Receiver<bool>,
) {
    loop {
        while *pause.borrow_and_update() {
            if pause.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            biased;
            changed = pause.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            msg = stream.next() => {
                let item = match msg {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                        Ok(v) => Incoming::Json(v),
                        Err(_) => Incoming::NotJson(t.to_string()),
                    },
                    Some(Ok(Message::Binary(b))) => Incoming::Binary(b.len()),
                    Some(Ok(Message::Ping(_))) => Incoming::Ping,
                    Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(f))) => match f {
                        Some(f) => Incoming::Close(Some(u16::from(f.code)), f.reason.to_string()),
                        None => Incoming::Close(None, String::new()),
                    },
                    Some(Err(e)) => {
                        let _ = tx.send(Incoming::Ended(e.to_string()));
                        return;
                    }
                    None => {
                        let _ = tx.send(Incoming::Ended("end of stream".into()));
                        return;
                    }
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
    }
}

impl Ws {
    /// Open the socket (asserting the upgrade succeeds) without reading any frame.
    pub async fn open(url: &str, user_id: &str) -> Ws {
        let (stream, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket upgrade timed out: {url}"))
            .unwrap_or_else(|e| panic!("WebSocket upgrade failed for {url}: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        let (sink, stream) = stream.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (pause, pause_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(stream, tx, pause_rx));
        Ws {
            user_id: user_id.to_string(),
            connection_id: String::new(),
            first: Value::Null,
            rx,
            sink,
            pause,
            reader,
            pings: 0,
            closed: None,
            backlog: std::collections::VecDeque::new(),
        }
    }

    /// Read the first frame, check it is a successful `health.check`, remember `connection_id`.
    pub async fn handshake(&mut self) {
        let first = match self.next(WAIT).await {
            Some(Incoming::Json(v)) => v,
            other => panic!(
                "{}: expected a health.check first frame, got {other:?}",
                self.user_id
            ),
        };
        assert_eq!(
            first["type"],
            event_type::HEALTH_CHECK,
            "{}: first frame must be health.check: {first}",
            self.user_id
        );
        assert!(
            first.get("error").is_none(),
            "first frame carries an error: {first}"
        );
        let id = first["connection_id"]
            .as_str()
            .unwrap_or_else(|| panic!("first frame without connection_id: {first}"));
        assert!(!id.is_empty(), "empty connection_id: {first}");
        self.connection_id = id.to_string();
        self.first = first;
    }

    pub fn me(&self) -> &Value {
        &self.first["me"]
    }

    /// The next frame other than a protocol Ping, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Incoming> {
        if let Some(item) = self.backlog.pop_front() {
            return Some(item);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => return Some(Incoming::Ended("reader stopped".into())),
                Ok(Some(Incoming::Ping)) => self.pings += 1,
                Ok(Some(item)) => {
                    if self.closed.is_none() {
                        match &item {
                            Incoming::Close(code, _) => self.closed = Some(Closed::Frame(*code)),
                            Incoming::Ended(_) => self.closed = Some(Closed::NoFrame),
                            _ => {}
                        }
                    }
                    return Some(item);
                }
            }
        }
    }

    /// Wait for a JSON event satisfying `pred`; events before it stay queued for later reads. Panics on timeout
    /// or close.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Json(v)) => {
                    if pred(&v) {
                        for item in skipped.into_iter().rev() {
                            self.backlog.push_front(Incoming::Json(item));
                        }
                        return v;
                    }
                    skipped.push(v);
                }
                Some(Incoming::NotJson(t)) => panic!("{}: server sent a non-JSON text frame: {t:?}", self.user_id),
                Some(Incoming::Binary(_)) => panic!("{}: server sent a binary frame", self.user_id),
                Some(other) => panic!(
                    "{} ({}): connection ended while waiting for {what}: {other:?}; other events: {skipped:?}",
                    self.user_id, self.connection_id
                ),
                None => panic!(
                    "{} ({}): no {what} within {timeout:?}; other events: {skipped:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    pub async fn wait_type(&mut self, kind: &str, timeout: Duration) -> Value {
        self.wait_for(kind, timeout, |v| v["type"] == kind).await
    }

    /// Wait for `user.presence.changed` about `user` with `online`.
    pub async fn wait_presence(&mut self, user: &str, online: bool, timeout: Duration) -> Value {
        let what = format!("user.presence.changed {user} online={online}");
        self.wait_for(&what, timeout, |v| {
            v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user
        })
        .await
        .also(|ev| {
            assert_eq!(
                ev["user"]["online"], online,
                "presence event about {user} with the wrong online value: {ev}"
            )
        })
    }

    /// Collect every JSON event satisfying `pred` during `window`. Panics if the connection ends meanwhile
    /// (an absent event on a dead socket proves nothing).
    pub async fn collect(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next(left).await {
                None => return out,
                Some(Incoming::Json(v)) => {
                    if pred(&v) {
                        out.push(v);
                    }
                }
                Some(other) => panic!(
                    "{} ({}): connection ended during a quiet window: {other:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    /// Assert that no event satisfying `pred` arrives during `window`.
    pub async fn expect_none(
        &mut self,
        what: &str,
        window: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        let got = self.collect(window, pred).await;
        assert!(
            got.is_empty(),
            "{} ({}): expected no {what} within {window:?}, got {got:?}",
            self.user_id,
            self.connection_id
        );
    }

    /// Assert that no `user.presence.changed` about `user` arrives during `window`.
    pub async fn expect_no_presence(&mut self, user: &str, window: Duration) {
        self.expect_none(
            &format!("user.presence.changed about {user}"),
            window,
            |v| v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user,
        )
        .await
    }

    /// Drain whatever is already queued (non-blocking beyond a short settle time).
    pub async fn drain(&mut self, settle: Duration) -> Vec<Value> {
        self.collect(settle, |_| true).await
    }

    /// Wait until the connection ends; skips events. Panics on timeout.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Closed {
        if let Some(c) = &self.closed {
            return c.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Close(code, _)) => return Closed::Frame(code),
                Some(Incoming::Ended(reason)) => {
                    if std::env::var("PRESENCE_TEST_DEBUG").is_ok() {
                        eprintln!("{}: stream ended: {reason}", self.user_id);
                    }
                    return self.closed.clone().unwrap_or(Closed::NoFrame);
                }
                Some(_) => continue,
                None => panic!(
                    "{} ({}): connection still open after {timeout:?}",
                    self.user_id, self.connection_id
                ),
            }
        }
    }

    /// Wait for a close frame and return its code; panics if the stream ends without one.
    pub async fn wait_close_code(&mut self, timeout: Duration) -> u16 {
        match self.wait_closed(timeout).await {
            Closed::Frame(Some(code)) => code,
            other => panic!(
                "{} ({}): expected a close frame with a code, got {other:?}",
                self.user_id, self.connection_id
            ),
        }
    }

    pub async fn send(&mut self, msg: Message) {
        tokio::time::timeout(WAIT, self.sink.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_string())).await
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await
    }

    /// Send the SDK's keep-alive ping and return the server's `health.check` answer.
    pub async fn health_ping(&mut self) -> Value {
        let ping = json!([{ "type": "health.check", "client_id": format!("{}--{}", self.user_id, uuid_like()) }]);
        self.send_json(&ping).await;
        self.wait_type(event_type::HEALTH_CHECK, WAIT).await
    }

    /// Send a close frame with `code` and wait (bounded) for the server to finish the closing handshake.
    pub async fn close(mut self, code: u16) {
        self.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })))
        .await;
        self.finish_close().await;
    }

    /// Send a close frame without a status code (the server sees 1005).
    pub async fn close_without_code(mut self) {
        self.send(Message::Close(None)).await;
        self.finish_close().await;
    }

    async fn finish_close(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                None | Some(Incoming::Ended(_)) => break,
                Some(_) => continue,
            }
        }
        let _ = self.sink.close().await;
    }

    /// Drop the TCP connection without any close frame (the server sees 1006).
    pub async fn drop_tcp(self) {
        let Ws { reader, sink, .. } = self;
        reader.abort();
        let _ = reader.await;
        drop(sink);
    }

    /// Stop reading the socket: no frame is processed and protocol Pings go unanswered. A Pong already owed for
    /// a Ping read before the freeze is written out now, so that nothing is left to write later (writing to a
    /// socket the server has closed would reset it and lose the close frame still to be read).
    pub async fn freeze(&mut self) {
        self.pause.send_replace(true);
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(WAIT, self.sink.flush()).await;
    }

    /// Resume reading after `freeze`.
    pub fn thaw(&self) {
        self.pause.send_replace(false);
    }
}

/// Small extension to run an assertion on a value and pass it on.
pub trait Also: Sized {
    fn also(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl<T> Also for T {}

/// Assert that a `health.check` first frame / `me` object carries everything the SDK relies on.
pub fn assert_own_user(me: &Value, id: &str) {
    assert_eq!(me["id"], id, "me.id in {me}");
    for key in ["mutes", "channel_mutes"] {
        assert!(me[key].is_array(), "me.{key} must be an array: {me}");
    }
    assert!(
        me["invisible"].is_boolean(),
        "me.invisible must be a boolean: {me}"
    );
    assert!(
        me["online"].is_boolean(),
        "me.online must be a boolean: {me}"
    );
    time(&me["last_active"]);
    time(&me["created_at"]);
    time(&me["updated_at"]);
    assert!(me["role"].is_string(), "me.role: {me}");
}

/// Assert a user object as seen by another user: complete public fields, no own-only fields.
pub fn assert_public_user(u: &Value, id: &str) {
    assert_eq!(u["id"], id, "user.id in {u}");
    assert!(u["online"].is_boolean(), "online must be a boolean: {u}");
    assert!(u["role"].is_string(), "role: {u}");
    time(&u["created_at"]);
    time(&u["updated_at"]);
    for own in [
        "invisible",
        "mutes",
        "channel_mutes",
        "devices",
        "unread_count",
        "total_unread_count",
    ] {
        assert!(
            u.get(own).is_none(),
            "own-only field `{own}` exposed on another user's object: {u}"
        );
    }
}

/// Sleep helper.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub fn is_presence_of(v: &Value, user: &str) -> bool {
    v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user
}

pub fn is_type_of(v: &Value, kind: &str, user: &str) -> bool {
    v["type"] == kind && v["user"]["id"] == user
}

// ---------------------------------------------------------------------------------------------------------------
// A bare WebSocket client that never answers anything: for frozen-client tests
// ---------------------------------------------------------------------------------------------------------------

/// A WebSocket over a plain TCP stream, driven by hand: it sends nothing after the handshake (no Pongs) and
/// reads only when asked, so the server sees a client that is alive at the TCP level but silent.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server: opcode and payload.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    pub fn json(&self) -> Option<Value> {
        (self.opcode == 1)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }
}

impl RawWs {
    /// Connect as `user_id` and read the first frame (which must be `health.check`).
    pub async fn connect(server: &Server, user_id: &str) -> (RawWs, Value) {
        RawWs::connect_with_recv_buffer(server, user_id, None).await
    }

    /// Like `connect`, with the socket's receive buffer fixed at `recv_buffer` bytes (no autotuning), so that
    /// a client that stops reading makes the server's writes block after little data.
    pub async fn connect_with_recv_buffer(
        server: &Server,
        user_id: &str,
        recv_buffer: Option<u32>,
    ) -> (RawWs, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let params = Server::connect_params(
            user_id,
            &json!({ "id": user_id }),
            &server.user_token(user_id),
        );
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = server.ws_url(&p);
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.port
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("upgrade response timed out")
                .unwrap();
            assert!(n > 0, "connection closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        let mut ws = RawWs {
            stream,
            buf: buf[header_end..].to_vec(),
        };
        let first = loop {
            let f = ws.read_frame(WAIT).await.expect("first frame");
            if let Some(v) = f.json() {
                break v;
            }
        };
        assert_eq!(first["type"], event_type::HEALTH_CHECK, "{first}");
        (ws, first)
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut len = (b[1] & 0x7f) as usize;
        let mut pos = 2;
        if len == 126 {
            if b.len() < 4 {
                return None;
            }
            len = u16::from_be_bytes([b[2], b[3]]) as usize;
            pos = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return None;
            }
            len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            pos = 10;
        }
        assert!(!masked, "server frames must not be masked");
        if b.len() < pos + len {
            return None;
        }
        let payload = b[pos..pos + len].to_vec();
        self.buf.drain(..pos + len);
        Some(RawFrame { opcode, payload })
    }

    /// The next frame, or None at end of stream or timeout.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read everything the server sent until it closed the stream (bounded).
    pub async fn read_to_end(&mut self, timeout: Duration) -> Vec<RawFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(f) => frames.push(f),
                None => return frames,
            }
        }
    }
}
