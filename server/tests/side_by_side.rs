//! Servers side by side on one host: an admin address nobody asked for never stops a server from starting, while
//! one given explicitly that cannot be bound is a startup error (exit status 2).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// The default admin address, held by the test so that no server can take it.
fn hold_default_admin_port() -> Option<std::net::TcpListener> {
    // Already taken by something else on this machine: held all the same.
    std::net::TcpListener::bind("127.0.0.1:7071").ok()
}

/// A server on a free port without `--admin-addr`, and its public base URL once it listens; its stdout lines are
/// collected until then.
fn start_without_admin_flag() -> (Child, String, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_presence-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PRESENCE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--addr", "127.0.0.1:0", "--db", ":memory:"])
        .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn presence-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                lines.push(line.clone());
                if let Some(url) = line.strip_prefix("listening on ") {
                    // The admin line would follow at once; give it a moment to show it does not.
                    std::thread::sleep(Duration::from_millis(300));
                    lines.extend(rx.try_iter());
                    return (child, url.trim().to_string(), lines);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not listen within 30 s; stdout: {lines:?}");
            }
        }
    }
}

#[tokio::test]
async fn two_servers_without_an_admin_address_start_side_by_side() {
    let _held = hold_default_admin_port();
    let (mut a, url_a, lines_a) = start_without_admin_flag();
    let (mut b, url_b, lines_b) = start_without_admin_flag();
    assert_ne!(url_a, url_b);
    for (url, lines) in [(&url_a, &lines_a), (&url_b, &lines_b)] {
        assert!(
            !lines.iter().any(|l| l.starts_with("admin listening on")),
            "the default admin port is taken, so no admin listener: {lines:?}"
        );
        let health = reqwest::get(format!("{url}/healthz"))
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "{url} serves");
    }
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn an_admin_address_given_and_taken_stops_the_start_with_status_2() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken = held.local_addr().expect("its address").to_string();
    for (args, env) in [
        (vec!["--admin-addr", taken.as_str()], vec![]),
        (vec![], vec![("PRESENCE_ADMIN_ADDR", taken.as_str())]),
    ] {
        let mut all = vec![
            "--addr",
            "127.0.0.1:0",
            "--db",
            ":memory:",
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
        ];
        all.extend(args);
        let run = run_to_exit(&all, &env).await;
        assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
        assert!(
            run.stderr.contains("--admin-addr") && run.stderr.contains(&taken),
            "the message names the flag and the address: {}",
            run.stderr
        );
        assert!(!run.stdout.contains("listening on"), "{}", run.stdout);
    }
}
