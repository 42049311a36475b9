//! The PostgreSQL store (`--database-url`) with the real binary against a private PostgreSQL: records survive
//! restarts, an acknowledged write survives kill -9, an outage fails writes whole and the server recovers by
//! itself once PostgreSQL is back, and several processes share one database.

mod common;

use common::pg::Postgres;
use common::*;
use presence_protocol::codes::close_code;
use serde_json::json;

fn on(pg: &Postgres) -> ServerOpts {
    ServerOpts::default().env("PRESENCE_DATABASE_URL", &pg.url)
}

/// The server's answer to a write it could not commit: 500, code -1, naming the database failure.
fn assert_database_failure(r: &Resp, operation: &str) {
    let e = r.err(500, -1);
    assert!(
        e.message
            .starts_with(&format!("{operation} failed with error: "))
            && e.message.contains("database"),
        "the message must name the operation and the database failure: {}",
        e.message
    );
}

#[tokio::test]
async fn users_channels_and_members_survive_a_restart() {
    let pg = Postgres::start();
    let mut s = Server::start_with(on(&pg)).await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice", "image": "http://img/a", "status": "busy", "color": "red", "prefs": { "theme": "dark", "n": [1, 2] } }),
        json!({ "id": "bob", "name": "Bob", "role": "admin", "teams": ["red", "blue"] }),
        json!({ "id": "carol", "status": "away" }),
    ])
    .await;
    s.partial_update(
        &Auth::Server,
        "bob",
        json!({ "name": "Robert", "status": "lunch" }),
        &["teams"],
    )
    .await
    .ok(200);
    s.partial_update(
        &Auth::Server,
        "alice",
        json!({ "invisible": true }),
        &["image"],
    )
    .await
    .ok(200);
    s.create_channel(
        "messaging",
        "c1",
        &["alice", "bob"],
        json!({ "color": "blue", "topic": { "x": 1 } }),
    )
    .await;
    s.create_channel("team", "t1", &["bob", "carol"], json!({}))
        .await;
    // Members who joined and left after creation, row by row.
    s.update_channel(
        &Auth::Server,
        "team",
        "t1",
        json!({ "add_members": ["alice"] }),
    )
    .await
    .ok(201);
    s.update_channel(
        &Auth::Server,
        "team",
        "t1",
        json!({ "remove_members": ["bob"] }),
    )
    .await
    .ok(201);
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
    let users_before = all_users(&s).await;
    let channels_before = all_channels(&s).await;
    assert_eq!(channels_before.as_array().unwrap().len(), 3);

    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exit status {status:?}");
    let s = Server::start_with(on(&pg)).await;
    let users_after = all_users(&s).await;
    assert_eq!(users_after, users_before, "users changed across a restart");
    assert_eq!(all_channels(&s).await, channels_before);
    assert_eq!(channels_before[2]["members"], json!(["alice", "carol"]));
    let bob = &users_after[1];
    assert_eq!(
        (&bob["name"], &bob["status"], &bob["role"]),
        (&json!("Robert"), &json!("lunch"), &json!("admin")),
        "{bob}"
    );
    assert_eq!(bob["teams"], json!([]), "unset teams came back: {bob}");
    let alice = &users_after[0];
    assert!(
        alice.get("image").is_none(),
        "unset image came back: {alice}"
    );
    assert_eq!(alice["prefs"], json!({ "theme": "dark", "n": [1, 2] }));
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
    let alice = s.connect("alice").await;
    assert_eq!(alice.me()["invisible"], true, "{}", alice.me());

    // Custom data is JSONB: SQL can reach into it.
    let db = pg.client().await;
    let color: Option<String> = db
        .query_one("SELECT data->>'color' FROM users WHERE id = 'alice'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(color.as_deref(), Some("red"));
    let versions: Vec<i32> = db
        .query("SELECT version FROM presence_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5], "each migration applied once");
}

#[tokio::test]
async fn an_invisible_user_keeps_the_frozen_last_active_across_a_restart() {
    let pg = Postgres::start();
    let mut s = Server::start_with(on(&pg)).await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let alice = s.connect("alice").await;
    sleep_ms(100).await;
    alice.close(1000).await;
    sleep_ms(300).await;
    let seen_before = s.user_as(&Auth::user("bob"), "alice").await;
    let frozen = time(&seen_before["last_active"]);
    s.partial_update(&Auth::Server, "alice", json!({ "invisible": true }), &[])
        .await
        .ok(200);
    // Active while invisible: her own last_active moves on, what others see stays frozen.
    sleep_ms(1100).await;
    let alice = s.connect("alice").await;
    let own = time(&alice.me()["last_active"]);
    assert!(own > frozen, "{own} vs {frozen}");
    alice.close(1000).await;
    sleep_ms(300).await;
    let bob_view = s.user_as(&Auth::user("bob"), "alice").await;
    let own_view = s.user_as(&Auth::user("alice"), "alice").await;
    assert_eq!(time(&bob_view["last_active"]), frozen, "{bob_view}");

    s.terminate().await;
    let s = Server::start_with(on(&pg)).await;
    assert_eq!(s.user_as(&Auth::user("bob"), "alice").await, bob_view);
    assert_eq!(s.user_as(&Auth::user("alice"), "alice").await, own_view);
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    let alice = s.connect("alice").await;
    assert_eq!(alice.me()["invisible"], true);
    bob.expect_no_presence("alice", QUIET).await;
}

#[tokio::test]
async fn last_active_stamps_of_pings_and_shutdown_are_stored() {
    let pg = Postgres::start();
    // A ping stores `last_active` once the stored one is a refresh interval old (15 minutes by default).
    let s = Server::start_with(on(&pg).env("PRESENCE_LAST_ACTIVE_REFRESH_MS", "500")).await;
    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let alice = s.connect("alice").await;
    let mut bob = s.connect("bob").await;
    let connected = alice.me()["last_active"].clone();
    sleep_ms(600).await;
    let pinged = bob.health_ping().await["me"]["last_active"].clone();
    assert_ne!(pinged, connected);
    sleep_ms(100).await;
    drop(s); // SIGKILL: the users stay stamped as last seen.
    drop((alice, bob));
    let mut s = Server::start_with(on(&pg)).await;
    assert_eq!(
        s.user_as(&Auth::Server, "alice").await["last_active"],
        connected
    );
    assert_eq!(s.user_as(&Auth::Server, "bob").await["last_active"], pinged);

    let alice = s.connect("alice").await;
    // A gap tells the shutdown stamp apart from the connect stamp.
    sleep_ms(1200).await;
    let stopping = now();
    s.terminate().await;
    drop(alice);
    let s = Server::start_with(on(&pg)).await;
    let u = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(u["online"], false, "{u}");
    let last_active = time(&u["last_active"]);
    assert!(
        last_active >= stopping - chrono::Duration::milliseconds(50),
        "last_active {last_active} is not the shutdown stamp ({stopping}): {u}"
    );
}

#[tokio::test]
async fn an_acknowledged_write_survives_kill_9() {
    let pg = Postgres::start();
    let s = Server::start_with(on(&pg)).await;
    s.upsert(&[json!({ "id": "dave", "status": "saved" })])
        .await;
    s.create_channel("messaging", "kept", &["dave"], json!({ "n": 1 }))
        .await;
    drop(s); // SIGKILL: no shutdown flush.
    let s = Server::start_with(on(&pg)).await;
    assert_eq!(s.user_as(&Auth::Server, "dave").await["status"], "saved");
    let channels = all_channels(&s).await;
    assert_eq!(
        channels[0]["channel"]["cid"], "messaging:kept",
        "{channels}"
    );
    assert_eq!(channels[0]["members"], json!(["dave"]));
}

#[tokio::test]
async fn an_outage_fails_writes_whole_and_the_server_recovers_by_itself() {
    let mut pg = Postgres::start();
    let mut s = Server::start_with(on(&pg)).await;
    s.upsert(&[
        json!({ "id": "alice", "name": "Alice" }),
        json!({ "id": "bob" }),
    ])
    .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;

    pg.stop();
    let r = s
        .upsert_as(
            &Auth::Server,
            &[
                json!({ "id": "alice", "name": "During" }),
                json!({ "id": "erin" }),
            ],
        )
        .await;
    assert_database_failure(&r, "UpdateUsers");
    let (frame, mut alice) = s.refused_connect("alice", &json!({ "id": "alice" })).await;
    assert_eq!(frame["error"]["code"], -1, "{frame}");
    let code = alice.wait_close_code(WAIT).await;
    assert_ne!(code, close_code::NORMAL, "clients do not retry after 1000");
    bob.expect_no_presence("alice", QUIET).await;
    assert_eq!(s.user_as(&Auth::Server, "alice").await["name"], "Alice");
    assert!(s.user_ids(json!({ "id": "erin" })).await.is_empty());

    pg.restart();
    s.upsert_as(&Auth::Server, &[json!({ "id": "alice", "name": "After" })])
        .await
        .ok(201);
    let alice = s.connect("alice").await;
    bob.wait_presence("alice", true, WAIT).await;
    drop((alice, bob));

    s.terminate().await;
    let s = Server::start_with(on(&pg)).await;
    assert_eq!(s.user_as(&Auth::Server, "alice").await["name"], "After");
    assert!(
        s.user_ids(json!({ "id": "erin" })).await.is_empty(),
        "half of the failed batch was stored"
    );
}

#[tokio::test]
async fn a_write_the_database_refuses_fails_only_its_own_request_in_a_batch() {
    let pg = Postgres::start();
    let s = Server::start_with(on(&pg)).await;
    s.upsert(&[json!({ "id": "carol" })]).await;
    // Nothing the edge lets through is refused by the schema the server makes (ids are capped, NUL is escaped):
    // a constraint of the test's stands for whatever a database may refuse (error class 23).
    let admin = pg.client().await;
    admin
        .batch_execute("ALTER TABLE users ADD CONSTRAINT no_poison CHECK (id <> 'poisoned')")
        .await
        .unwrap();

    // While the test holds the users table, the server's commit waits and the next requests queue up into
    // one batch.
    let mut holder = pg.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let first_user = [json!({ "id": "first" })];
    let first = s.upsert_as(&Auth::Server, &first_user);
    let refused_id = "poisoned";
    let others: Vec<[serde_json::Value; 1]> = (0..20)
        .map(|i| [json!({ "id": format!("user-{i}") })])
        .collect();
    let refused_user = [json!({ "id": refused_id })];
    let batch = async {
        sleep_ms(300).await;
        let writes = others.iter().map(|user| s.upsert_as(&Auth::Server, user));
        let refused = s.upsert_as(&Auth::Server, &refused_user);
        let connect = s.connect("carol");
        let release = async {
            sleep_ms(500).await;
            hold.rollback().await.unwrap();
        };
        let (writes, refused, connect, ()) = tokio::join!(
            futures_util::future::join_all(writes),
            refused,
            connect,
            release
        );
        (writes, refused, connect)
    };
    let (first, (writes, refused, _carol)) = tokio::join!(first, batch);
    first.ok(201);
    for r in &writes {
        r.ok(201);
    }
    assert_database_failure(&refused, "UpdateUsers");
    assert_eq!(s.user_as(&Auth::Server, "carol").await["online"], true);
    assert!(s.user_ids(json!({ "id": refused_id })).await.is_empty());
    assert_eq!(
        s.user_ids(json!({ "id": { "$in": ["user-0", "user-19"] } }))
            .await
            .len(),
        2
    );
    let health = s.get("/healthz").no_api_key().send().await;
    assert_eq!(
        health.status, 200,
        "a refused write is not a failing database: {}",
        health.text
    );
}

#[tokio::test]
async fn health_names_the_database_while_it_is_down_and_recovers_with_it() {
    let mut pg = Postgres::start();
    let s = Server::start_with(on(&pg)).await;
    let healthz = || async { s.get("/healthz").no_api_key().send().await };
    assert_eq!(healthz().await.status, 200);

    pg.stop();
    s.upsert_as(&Auth::Server, &[json!({ "id": "alice" })])
        .await
        .err(500, -1);
    let r = healthz().await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            503,
            json!({ "status": "unavailable", "failing": ["database"] })
        ),
        "{}",
        r.text
    );

    pg.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    while healthz().await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz stayed 503 after PostgreSQL came back"
        );
        sleep_ms(50).await;
    }
    s.upsert_as(&Auth::Server, &[json!({ "id": "alice" })])
        .await
        .ok(201);
}

#[tokio::test]
async fn two_processes_share_one_database() {
    let pg = Postgres::start();
    // Started together on an empty database: the migration runs once, neither fails.
    let (a, mut b) = tokio::join!(Server::start_with(on(&pg)), Server::start_with(on(&pg)));
    a.upsert(&[json!({ "id": "frank", "status": "via a" })])
        .await;
    a.create_channel("team", "shared", &["frank"], json!({ "topic": "x" }))
        .await;
    b.terminate().await;
    let b = Server::start_with(on(&pg)).await;
    assert_eq!(b.user_as(&Auth::Server, "frank").await["status"], "via a");
    assert_eq!(all_channels(&b).await, all_channels(&a).await);
}

#[tokio::test]
async fn text_with_nul_characters_is_stored_and_comes_back() {
    let pg = Postgres::start();
    let mut s = Server::start_with(on(&pg)).await;
    let odd = json!({ "id": "nul-user", "name": "a\u{0}b", "k\u{0}": ["\u{0}", { "\u{FFFF}": "\u{FFFF}0" }], "teams": ["t\u{0}"] });
    s.upsert(&[odd, json!({ "id": "plain" })]).await;
    let before = all_users(&s).await;
    s.terminate().await;
    let s = Server::start_with(on(&pg)).await;
    assert_eq!(all_users(&s).await, before);
    assert_eq!(before[0]["name"], "a\u{0}b", "{before}");
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_without_showing_the_password() {
    let out = run_to_exit(
        &[
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "off",
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
        ],
        &[(
            "PRESENCE_DATABASE_URL",
            "postgres://presence:hunter2secret@127.0.0.1:1/presence",
        )],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("cannot open database postgres://presence@127.0.0.1:1/presence"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2secret"), "{}", out.stderr);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
}

mod log_order {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use presence_server::storage::{
        ChannelRecord, MemberRecord, PostgresStore, Snapshot, Stamped, Store, UserRecord, Write,
    };

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn user(status: &str, last_active: i64) -> Write {
        let data = json!({ "status": status }).as_object().unwrap().clone();
        Write::SaveUser(Box::new(UserRecord {
            id: "frank".into(),
            role: "user".into(),
            teams: vec![],
            invisible: false,
            data,
            created_at: at(0),
            updated_at: at(last_active),
            last_active: Some(at(last_active)),
            frozen_last_active: None,
        }))
    }

    fn channel(topic: &str, members: &[&str]) -> Write {
        let data = json!({ "topic": topic }).as_object().unwrap().clone();
        Write::SaveChannel(Box::new(ChannelRecord {
            cid: "team:shared".into(),
            channel_type: "team".into(),
            id: "shared".into(),
            data,
            created_by: None,
            created_at: at(0),
            updated_at: at(0),
            members: members
                .iter()
                .map(|m| MemberRecord {
                    user_id: (*m).into(),
                    channel_role: "channel_member".into(),
                    created_at: at(0),
                    updated_at: at(0),
                })
                .collect(),
        }))
    }

    fn stamped(pos: Option<(u64, u64)>, writes: Vec<Write>) -> Vec<Stamped> {
        writes
            .into_iter()
            .map(|write| Stamped { write, pos })
            .collect()
    }

    fn commit(pg: &Postgres, pos: Option<(u64, u64)>, writes: Vec<Write>) {
        let (mut store, _) = PostgresStore::open(&pg.url).unwrap();
        store.commit(&stamped(pos, writes)).unwrap();
    }

    fn load(pg: &Postgres) -> Snapshot {
        PostgresStore::open(&pg.url).unwrap().1
    }

    /// (status, last_active) of frank; (topic, member ids) of the channel.
    fn stored(pg: &Postgres) -> ((String, DateTime<Utc>), (String, Vec<String>)) {
        let snapshot = load(pg);
        let u = &snapshot.users[0];
        let c = &snapshot.channels[0];
        (
            (
                u.data["status"].as_str().unwrap().into(),
                u.last_active.unwrap(),
            ),
            (
                c.data["topic"].as_str().unwrap().into(),
                c.members.iter().map(|m| m.user_id.clone()).collect(),
            ),
        )
    }

    #[tokio::test]
    async fn a_write_of_an_earlier_log_position_committed_later_is_refused() {
        let pg = Postgres::start();
        // Node B commits its entry at 2000-1 first, node A its earlier entry at 1000-5 after it.
        commit(
            &pg,
            Some((2000, 1)),
            vec![user("newer", 20), channel("newer", &["frank", "gina"])],
        );
        commit(
            &pg,
            Some((1000, 5)),
            vec![user("older", 10), channel("older", &["frank"])],
        );
        // A health-check stamp taken earlier on the slower node does not move last_active back either.
        commit(
            &pg,
            None,
            vec![Write::TouchLastActive("frank".into(), at(15))],
        );
        assert_eq!(
            stored(&pg),
            (
                ("newer".into(), at(20)),
                ("newer".into(), vec!["frank".into(), "gina".into()])
            )
        );
        // A fresh server started on the database answers the newer write.
        let mut s = Server::start_with(on(&pg)).await;
        assert_eq!(s.user_as(&Auth::Server, "frank").await["status"], "newer");
        s.terminate().await;

        // One entry writing a record twice: its last write holds.
        commit(
            &pg,
            Some((3000, 0)),
            vec![
                user("first", 30),
                channel("first", &["gina"]),
                user("second", 31),
                channel("second", &["frank"]),
            ],
        );
        assert_eq!(
            stored(&pg),
            (
                ("second".into(), at(31)),
                ("second".into(), vec!["frank".into()])
            )
        );
        // Without a cluster log (one process) a write always applies, and a later stamp moves last_active.
        commit(&pg, None, vec![user("single", 5), channel("single", &[])]);
        commit(
            &pg,
            None,
            vec![Write::TouchLastActive("frank".into(), at(40))],
        );
        assert_eq!(
            stored(&pg),
            (("single".into(), at(40)), ("single".into(), vec![]))
        );
        // The position the record held stays: an entry older than it is still refused.
        commit(&pg, Some((2500, 0)), vec![user("stale", 50)]);
        assert_eq!(stored(&pg).0 .0, "single");
    }

    fn member_ids(pg: &Postgres) -> Vec<String> {
        stored(pg).1 .1
    }

    fn add(ids: &[&str], joined: i64) -> Write {
        Write::AddMembers(
            "team:shared".into(),
            ids.iter()
                .map(|m| MemberRecord {
                    user_id: (*m).into(),
                    channel_role: "channel_member".into(),
                    created_at: at(joined),
                    updated_at: at(joined),
                })
                .collect(),
        )
    }

    fn remove(ids: &[&str]) -> Write {
        Write::RemoveMembers(
            "team:shared".into(),
            ids.iter().map(|m| (*m).into()).collect(),
        )
    }

    #[tokio::test]
    async fn a_member_write_of_an_earlier_log_position_committed_later_is_refused_per_member() {
        let pg = Postgres::start();
        commit(
            &pg,
            Some((1000, 0)),
            vec![user("x", 1), channel("x", &["frank"])],
        );
        // The log: gina and hank join at 2000-0, gina leaves at 3000-0; the node of 3000-0 commits first.
        commit(&pg, Some((3000, 0)), vec![remove(&["gina"])]);
        commit(&pg, Some((2000, 0)), vec![add(&["gina", "hank"], 2)]);
        assert_eq!(
            member_ids(&pg),
            ["frank", "hank"],
            "gina's earlier join lost to her later leaving"
        );
        // Coming back later wins over having left.
        commit(&pg, Some((4000, 0)), vec![add(&["gina"], 4)]);
        assert_eq!(member_ids(&pg), ["frank", "hank", "gina"]);
        // A whole-channel write sets the members as of its position: what joined or left later stays so.
        commit(&pg, Some((1500, 0)), vec![channel("x", &["ivan"])]);
        assert_eq!(member_ids(&pg), ["ivan", "hank", "gina"]);
        // One process (no positions): a leaving member's row goes.
        commit(&pg, None, vec![remove(&["ivan", "gina"])]);
        assert_eq!(member_ids(&pg), ["hank"]);
        let db = pg.client().await;
        let rows: i64 = db
            .query_one("SELECT count(*) FROM members", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            rows, 1,
            "no row kept for a member who left without a log position"
        );
        // A fresh server reads only current members.
        let mut s = Server::start_with(on(&pg)).await;
        let state = s
            .query_channel(
                &Auth::Server,
                None,
                "team",
                Some("shared"),
                json!({ "state": true }),
            )
            .await;
        assert_eq!(state.ok(201)["channel"]["member_count"], 1);
        s.terminate().await;
    }
}
