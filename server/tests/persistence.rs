//! Persistence: stop the server with SIGTERM, start it again on the same database file, nothing is lost; kill it
//! with SIGKILL instead, and what a crash may lose is bounded (a `last_active` refresh, never a connect or a
//! disconnect stamp).

mod common;

use common::*;
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

#[tokio::test]
async fn users_connected_at_shutdown_come_back_offline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presence.db");
    let opts = ServerOpts::default().db(&db);
    let mut s = Server::binary(opts.clone()).await;
    let alice = s
        .connect_with("alice", json!({ "id": "alice", "status": "here" }))
        .await;
    let connected = time(&alice.me()["last_active"]);
    // A gap between connecting and shutting down tells the shutdown stamp apart from the connect stamp.
    sleep_ms(1200).await;
    let stopping = now();
    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exit status {status:?}");
    let stopped = now();
    drop(alice);

    let s = Server::binary(opts).await;
    let u = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(u["online"], false, "{u}");
    assert_eq!(u["status"], "here");
    let last_active = time(&u["last_active"]);
    assert!(
        last_active >= connected + chrono::Duration::milliseconds(1100),
        "last_active {last_active} is the connect stamp ({connected}), not the shutdown: {u}"
    );
    assert!(
        last_active >= stopping - chrono::Duration::milliseconds(50) && last_active <= stopped,
        "last_active {last_active} is not the shutdown time (SIGTERM between {stopping} and {stopped}): {u}"
    );
    assert!(s.user_ids(json!({ "online": true })).await.is_empty());
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
