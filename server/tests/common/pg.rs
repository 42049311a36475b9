//! A private PostgreSQL for tests: a fresh cluster in a temporary folder, listening on a free loopback port, as
//! the `postgres` user when the tests run as root (PostgreSQL refuses root). It can be stopped and started again
//! on the same data and port, to test outages; dropping it stops it. Missing PostgreSQL fails the test.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where PostgreSQL's programs are: `PRESENCE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PRESENCE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run \
             `bash scripts/setup.sh --cluster` (installs Debian's postgresql), or set PRESENCE_PG_BIN"
        ),
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_root: bool,
    pub port: u16,
    /// `postgres://presence@127.0.0.1:PORT/presence`
    pub url: String,
    postmaster: Option<Child>,
}

impl Postgres {
    /// A new, empty database `presence` (user `presence`, no password) on a private instance.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let as_root = running_as_root();
        if as_root {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of the PostgreSQL folder failed");
        }
        let mut pg = Postgres {
            dir,
            bin,
            as_root,
            port: 0,
            url: String::new(),
            postmaster: None,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-U", "presence", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port picked free can be taken before PostgreSQL binds it: try a few.
        for attempt in 0.. {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("could not bind") => continue,
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        let out = Command::new(pg.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "presence",
            ])
            .arg("presence")
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.url = format!("postgres://presence@127.0.0.1:{}/presence", pg.port);
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// One of PostgreSQL's programs, run as the `postgres` user when the tests run as root.
    fn command(&self, program: &str) -> Command {
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.bin.join(program));
            cmd
        } else {
            Command::new(self.bin.join(program))
        }
    }

    /// Starts the server on `self.port` and waits until it accepts connections; `Err` carries its log.
    fn launch(&mut self) -> Result<(), String> {
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postgres");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("postgres stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Keep draining so PostgreSQL never blocks on a full pipe.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    log.push_str(&line);
                    log.push('\n');
                    if line.contains("ready to accept connections") {
                        self.postmaster = Some(child);
                        return Ok(());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(log);
                }
            }
        }
    }

    /// The postmaster's pid, from its pid file.
    fn postmaster_pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next().map(str::to_string)
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args([signal, &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.data_dir().join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Stops PostgreSQL (fast shutdown: open connections are cut) and waits until it is gone.
    pub fn stop(&mut self) {
        self.signal("-INT");
    }

    /// Starts PostgreSQL again on the same data and port.
    pub fn restart(&mut self) {
        assert!(self.postmaster.is_none(), "PostgreSQL is still running");
        if let Err(log) = self.launch() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    /// A client of the test's own, to look at what the server stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test's PostgreSQL");
        tokio::spawn(connection);
        client
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the data is thrown away.
        self.signal("-QUIT");
    }
}
