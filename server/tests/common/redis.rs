//! A private Redis for cluster tests: `redis-server` on a free loopback port, without persistence. It can be
//! killed and started again on the same port, to test outages; dropping it kills it. Missing Redis fails the
//! test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long Redis may take to start.
const START: Duration = Duration::from_secs(10);

pub struct Redis {
    pub port: u16,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
    server: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Redis {
    /// The options of a cluster node `id` on this Redis.
    pub fn node(&self, id: &str) -> super::ServerOpts {
        super::ServerOpts::default()
            .arg("--redis-url", &self.url)
            .arg("--node-id", id)
    }

    /// An empty Redis of its own.
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: 0,
            url: String::new(),
            server: None,
        };
        // A port picked free can be taken before Redis binds it: try a few.
        for attempt in 0.. {
            redis.port = free_port();
            match redis.launch() {
                Ok(()) => break,
                Err(log) if attempt < 3 => {
                    eprintln!("Redis did not start, trying another port:\n{log}")
                }
                Err(log) => panic!("Redis did not start:\n{log}"),
            }
        }
        redis.url = format!("redis://127.0.0.1:{}", redis.port);
        redis
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): `apt-get install -y redis-server`")
            });
        let stdout = child.stdout.take().expect("Redis's output");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(Ok(()));
                    // Keep draining, so Redis never blocks on a full pipe.
                    log.clear();
                }
            }
            let _ = tx.send(Err(log));
        });
        let deadline = Instant::now() + START;
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => {
                self.server = Some(child);
                Ok(())
            }
            Ok(Err(log)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log)
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("no \"Ready to accept connections\" in time".into())
            }
        }
    }

    /// Kills Redis (its data is gone: it keeps none).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START;
        // The port may take a moment to be free again.
        while let Err(log) = self.launch() {
            assert!(
                Instant::now() < deadline,
                "Redis did not start again:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("the Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's Redis")
    }

    /// The number of entries in the stream `key` (`XLEN`).
    pub async fn xlen(&self, key: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut self.connection().await)
            .await
            .expect("XLEN")
    }

    /// The memory Redis holds for data, in bytes (`used_memory` of `INFO memory`).
    pub async fn used_memory(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.connection().await)
            .await
            .expect("INFO memory");
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("used_memory in INFO memory")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
