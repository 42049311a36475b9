//! Persistence: stop the server with SIGTERM, start it again on the same database file, nothing is lost; kill it
//! with SIGKILL instead, and what a crash may lose is bounded (a `last_active` refresh, never a connect or a
//! disconnect stamp). Commits are durable (SQLite in WAL mode, the log synced at every commit) and grouped.

mod common;

use common::*;
use futures_util::future::join_all;
use presence_protocol::codes::close_code;
use serde_json::{json, Value};

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let opts = ServerOpts::default().db(&db);

    let mut s = Server::binary(opts.clone()).await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "image": "http://img/a", "status": "busy", "color": "red", "prefs": { "theme": "dark", "n": [1, 2] } }),
        json!({ "id": "bob", "name": "Bob", "role": "admin", "teams": ["red", "blue"] }),
        json!({ "id": "carol", "status": "away" }),
    ])
    .await;
    s.partial_update(&Auth::Server, "alice", json!({ "invisible": true }), &[])
        .await
        .ok(200);
    // carol was online once: she has a last_active stamped at disconnect.
    let carol = s
        .connect_with("carol", json!({ "id": "carol", "language": "fr" }))
        .await;
    sleep_ms(300).await;
    carol.close(1000).await;
    s.create_channel(
        "messaging",
        "c1",
        &["alice", "bob"],
        json!({ "color": "blue", "topic": { "x": 1 } }),
    )
    .await;
    s.create_channel("team", "t1", &["bob", "carol"], json!({}))
        .await;
    let distinct = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            None,
            json!({ "data": { "members": ["alice", "carol"] }, "state": true }),
        )
        .await
        .ok(201)["channel"]["id"]
        .clone();

    // Let the offline transition settle, then snapshot.
    sleep_ms(200).await;
    let users_before = all_users(&s).await;
    let channels_before = all_channels(&s).await;
    assert_eq!(users_before.as_array().unwrap().len(), 3);
    assert!(
        users_before[2]["last_active"].is_string(),
        "carol has a last_active: {users_before}"
    );

    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exit status {status:?}");

    let s = Server::binary(opts).await;
    let users_after = all_users(&s).await;
    assert_eq!(users_after, users_before, "users changed across a restart");
    assert_eq!(
        all_channels(&s).await,
        channels_before,
        "channels changed across a restart"
    );
    assert_eq!(users_after[1]["role"], "admin");
    assert_eq!(
        users_after[0]["prefs"],
        json!({ "theme": "dark", "n": [1, 2] })
    );

    // The distinct channel resolves to the same id.
    let again = s
        .query_channel(
            &Auth::Server,
            None,
            "messaging",
            None,
            json!({ "data": { "members": ["carol", "alice"] }, "state": true }),
        )
        .await;
    assert_eq!(again.ok(201)["channel"]["id"], distinct);

    // alice is still invisible: her own connection says so, others see her offline.
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    assert_eq!(alice.me()["invisible"], true);
    assert_eq!(alice.me()["status"], "busy");
    assert_eq!(alice.me()["color"], "red");
    bob.expect_no_presence("alice", QUIET).await;
    assert_eq!(
        s.user_as(&Auth::user("bob"), "alice").await["online"],
        false
    );
}

/// A shutdown by `signal` (SIGTERM or SIGINT): the live socket closed with 1001, a clean exit, and the database
/// flushed: the user connected at the time comes back offline, stamped with the shutdown time.
async fn users_connected_at_shutdown_come_back_offline_after(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let opts = ServerOpts::default().db(&db);
    let mut s = Server::binary(opts.clone()).await;
    let mut alice = s
        .connect_with("alice", json!({ "id": "alice", "status": "here" }))
        .await;
    let connected = time(&alice.me()["last_active"]);
    // A gap between connecting and shutting down tells the shutdown stamp apart from the connect stamp.
    sleep_ms(1200).await;
    let stopping = now();
    let status = match signal {
        "SIGTERM" => s.terminate().await,
        "SIGINT" => s.interrupt().await,
        other => panic!("no such shutdown signal: {other}"),
    };
    assert!(status.success(), "{signal} exit status {status:?}");
    let stopped = now();
    assert_eq!(
        alice.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::GOING_AWAY)),
        "{signal}: a live socket is closed with 1001"
    );
    drop(alice);

    let s = Server::binary(opts).await;
    let u = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(u["online"], false, "{signal}: {u}");
    assert_eq!(u["status"], "here");
    let last_active = time(&u["last_active"]);
    assert!(
        last_active >= connected + chrono::Duration::milliseconds(1100),
        "{signal}: last_active {last_active} is the connect stamp ({connected}), not the shutdown: {u}"
    );
    assert!(
        last_active >= stopping - chrono::Duration::milliseconds(50) && last_active <= stopped,
        "{signal}: last_active {last_active} is not the shutdown time (between {stopping} and {stopped}): {u}"
    );
    assert!(s.user_ids(json!({ "online": true })).await.is_empty());
}

#[tokio::test]
async fn users_connected_at_shutdown_come_back_offline() {
    users_connected_at_shutdown_come_back_offline_after("SIGTERM").await;
}

#[tokio::test]
async fn sigint_shuts_down_like_sigterm() {
    users_connected_at_shutdown_come_back_offline_after("SIGINT").await;
}

/// A user's `last_active` as a server token reads it.
async fn last_active(s: &Server, id: &str) -> Value {
    s.user_as(&Auth::Server, id).await["last_active"].clone()
}

#[tokio::test]
async fn a_crash_loses_at_most_the_last_active_refresh_never_a_connect_or_disconnect_stamp() {
    const REFRESH_MS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let opts = ServerOpts::default()
        .db(&db)
        .last_active_refresh(REFRESH_MS);

    // alice connects and pings at once: everyone reads the ping's stamp, storage keeps the connect's.
    let mut s = Server::binary(opts.clone()).await;
    let mut alice = s.connect("alice").await;
    let connected = alice.me()["last_active"].clone();
    sleep_ms(20).await;
    let pinged = alice.health_ping().await["me"]["last_active"].clone();
    assert!(time(&pinged) > time(&connected), "{pinged} vs {connected}");
    assert_eq!(
        last_active(&s, "alice").await,
        pinged,
        "others read the refreshed stamp"
    );
    // bob connects and leaves: his disconnect stamp is written once the server reports him offline.
    let bob = s.connect("bob").await;
    sleep_ms(20).await;
    bob.close(1000).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let u = s.user_as(&Auth::Server, "bob").await;
        if u["online"] == false {
            break u["last_active"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never went offline: {u}"
        );
        sleep_ms(20).await;
    };
    s.kill().await;
    drop(alice);

    let mut s = Server::binary(opts.clone()).await;
    assert_eq!(
        last_active(&s, "alice").await,
        connected,
        "after the crash alice's stamp is her connect (the ping's refresh, {pinged}, less than the refresh \
         interval later, may be lost)"
    );
    assert_eq!(
        last_active(&s, "bob").await,
        left,
        "the disconnect stamp survives the crash"
    );

    // Connected longer than the refresh interval, alice's next ping is written; the one right after is not.
    let mut alice = s.connect("alice").await;
    let reconnected = alice.me()["last_active"].clone();
    sleep_ms(REFRESH_MS + 100).await;
    let refreshed = alice.health_ping().await["me"]["last_active"].clone();
    sleep_ms(20).await;
    let latest = alice.health_ping().await["me"]["last_active"].clone();
    assert!(time(&latest) > time(&refreshed) && time(&refreshed) > time(&reconnected));
    s.kill().await;
    drop(alice);

    let s = Server::binary(opts).await;
    let stored = last_active(&s, "alice").await;
    assert_eq!(
        stored, refreshed,
        "the ping a refresh interval after the connect is written"
    );
    assert!(
        time(&latest) - time(&stored) < chrono::Duration::milliseconds(REFRESH_MS as i64),
        "a crash loses less than the refresh interval: stored {stored}, last read {latest}"
    );
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_and_syncs_the_log_at_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    // The binary, for its pid: strace watches its syncs.
    let s = Server::binary(ServerOpts::default().db(&db)).await;
    s.upsert(&[json!({ "id": "first" })]).await;

    // The journal mode is kept in the database file: any connection reads it back.
    let file = rusqlite::Connection::open(&db).expect("open the database file");
    let mode: String = file
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("read journal_mode");
    assert_eq!(
        mode.to_lowercase(),
        "wal",
        "journal mode of {}",
        db.display()
    );
    drop(file);

    // `synchronous` is a setting of the server's own connection, not of the file: what FULL means in WAL mode
    // is that every commit syncs the log (NORMAL syncs it only at checkpoints), so count the server's syncs of
    // `presence.db-wal` while it commits writes one at a time.
    let trace = dir.path().join("syncs.txt");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &s.pid().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run strace (Debian: apt-get install strace)");
    // Attaching to every thread takes a moment; a sync missed then only lowers the count.
    sleep_ms(1000).await;
    let commits_before = s.metric("presence_store_commits_total").await;
    const WRITES: usize = 8;
    for i in 0..WRITES {
        s.upsert(&[json!({ "id": format!("u{i}") })]).await;
    }
    let commits = s.metric("presence_store_commits_total").await - commits_before;
    sleep_ms(200).await;
    std::process::Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .expect("stop strace");
    strace.wait().expect("wait for strace");
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let wal_syncs = text
        .lines()
        .filter(|l| {
            (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains("presence.db-wal>")
        })
        .count();
    assert!(
        commits >= WRITES as f64,
        "{WRITES} writes one after another made {commits} commits"
    );
    assert!(
        wal_syncs as f64 >= commits,
        "{commits} commits synced the write-ahead log {wal_syncs} times (synchronous=FULL syncs it at every \
         commit); strace saw:\n{text}"
    );
}

#[tokio::test]
async fn concurrent_writes_are_committed_in_fewer_transactions_than_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(ServerOpts::default().db(dir.path().join("presence.db"))).await;
    s.upsert(&[json!({ "id": "first" })]).await;
    let commits_before = s.metric("presence_store_commits_total").await;
    let writes_before = s.metric("presence_store_writes_total").await;
    const WRITES: usize = 100;
    let calls = (0..WRITES).map(|i| {
        let s = &s;
        async move {
            s.upsert(&[json!({ "id": format!("u{i}") })]).await;
        }
    });
    join_all(calls).await;
    let commits = s.metric("presence_store_commits_total").await - commits_before;
    let writes = s.metric("presence_store_writes_total").await - writes_before;
    assert!(
        writes >= WRITES as f64,
        "{WRITES} answered upserts of new users, {writes} writes committed"
    );
    assert!(
        commits >= 1.0 && commits < writes,
        "{writes} concurrent writes took {commits} commits: group commit puts many in one transaction"
    );
}
