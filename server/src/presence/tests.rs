//! The engine under a manual clock: every test runs in microseconds, time moves only when a test says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::event_type::{
    HEALTH_CHECK, USER_PRESENCE_CHANGED, USER_UPDATED, USER_WATCHING_START, USER_WATCHING_STOP,
};
use presence_protocol::{ChannelQueryRequest, JsonMap, PartialUserUpdate, QueryUsersPayload};
use serde_json::{json, Value};

use crate::model::{event_time, Caller, Write};
use crate::presence::{distinct_channel_key, Config, ConnId, Ending, Engine};

mod members;

const GRACE: Duration = Duration::from_millis(3000);
/// How old a connected user's stored `last_active` may grow before a ping writes it again.
const REFRESH: Duration = Duration::from_secs(15 * 60);

/// A fixed instant plus `ms` milliseconds.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap() + TimeDelta::milliseconds(ms)
}

fn map(v: Value) -> JsonMap {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// An engine and what each connection has received so far.
struct Test {
    engine: Engine,
    inbox: HashMap<ConnId, Vec<Value>>,
    writes: Vec<Write>,
}

impl Test {
    fn new(watch_implies_presence: bool) -> Test {
        let config = Config {
            offline_grace: GRACE,
            watch_implies_presence,
            max_connections_per_user: 3,
            max_channels_per_user: 1000,
            last_active_refresh: REFRESH,
            max_follows_per_connection: 5000,
            distinct_channel_key: distinct_channel_key("a secret"),
            webhook_url: None,
            webhook_events: Vec::new(),
        };
        let mut test = Test {
            engine: Engine::new(config, Vec::new(), Vec::new()),
            inbox: HashMap::new(),
            writes: Vec::new(),
        };
        let users: BTreeMap<String, JsonMap> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|id| (id.to_string(), map(json!({ "name": id.to_uppercase() }))))
            .collect();
        test.engine
            .upsert_users(&Caller::Server, &users, at(0))
            .unwrap();
        test.pump();
        test
    }

    /// Moves deliveries into the inboxes and writes aside.
    fn pump(&mut self) {
        for d in self.engine.poll_deliveries() {
            let frame: Value = serde_json::from_str(&d.frame).unwrap();
            for c in d.to {
                self.inbox.entry(c).or_default().push(frame.clone());
            }
        }
        self.writes.extend(self.engine.poll_writes());
    }

    fn connect_with(
        &mut self,
        conn: &str,
        user: &str,
        details: Value,
        now: DateTime<Utc>,
    ) -> ConnId {
        let id: ConnId = Arc::from(conn);
        self.engine
            .connect(Arc::clone(&id), user, &map(details), &[], now)
            .unwrap();
        self.pump();
        let mut frames = self.take(&id);
        assert_eq!(frames[0]["type"], HEALTH_CHECK, "{conn}: the first frame");
        frames.remove(0);
        if !frames.is_empty() {
            self.inbox.insert(Arc::clone(&id), frames);
        }
        id
    }

    fn connect(&mut self, conn: &str, user: &str, now: DateTime<Utc>) -> ConnId {
        self.connect_with(conn, user, json!({}), now)
    }

    fn disconnect(&mut self, conn: &ConnId, ending: Ending, now: DateTime<Utc>) {
        self.engine.disconnect(conn, ending, now);
        self.pump();
    }

    /// `conn` follows the presence of `users` through queryUsers, as its own user.
    fn follow(&mut self, conn: &ConnId, as_user: &str, users: &[&str]) {
        let payload: QueryUsersPayload = serde_json::from_value(json!({
            "filter_conditions": { "id": { "$in": users } }, "presence": true
        }))
        .unwrap();
        self.engine
            .query_users(&Caller::User(as_user.into()), Some(conn), &payload)
            .unwrap();
        self.pump();
    }

    fn channel(&mut self, id: &str, members: &[&str]) {
        let req: ChannelQueryRequest =
            serde_json::from_value(json!({ "data": { "members": members } })).unwrap();
        self.engine
            .query_channel(&Caller::Server, None, "messaging", Some(id), &req, at(0))
            .unwrap();
        self.pump();
    }

    fn watch(
        &mut self,
        conn: &ConnId,
        as_user: &str,
        id: &str,
        presence: bool,
        now: DateTime<Utc>,
    ) -> Value {
        let req: ChannelQueryRequest = serde_json::from_value(
            json!({ "watch": true, "presence": presence, "watchers": { "limit": 10 } }),
        )
        .unwrap();
        let state = self
            .engine
            .query_channel(
                &Caller::User(as_user.into()),
                Some(conn),
                "messaging",
                Some(id),
                &req,
                now,
            )
            .unwrap();
        self.pump();
        serde_json::to_value(state).unwrap()
    }

    fn take(&mut self, conn: &ConnId) -> Vec<Value> {
        self.inbox.remove(conn).unwrap_or_default()
    }

    /// The events of `kind` `conn` received since the last look (everything else is dropped).
    fn taken(&mut self, conn: &ConnId, kind: &str) -> Vec<Value> {
        self.take(conn)
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    fn presence_flips(&mut self, conn: &ConnId, about: &str) -> Vec<bool> {
        self.taken(conn, USER_PRESENCE_CHANGED)
            .into_iter()
            .filter(|e| e["user"]["id"] == about)
            .map(|e| e["user"]["online"].as_bool().unwrap())
            .collect()
    }

    fn seen_by(&mut self, viewer: &str, id: &str) -> Value {
        let payload: QueryUsersPayload =
            serde_json::from_value(json!({ "filter_conditions": { "id": id } })).unwrap();
        let users = self
            .engine
            .query_users(&Caller::User(viewer.into()), None, &payload)
            .unwrap();
        assert_eq!(users.len(), 1);
        serde_json::to_value(&users[0]).unwrap()
    }
}

#[test]
fn several_connections_flip_presence_only_on_the_first_and_the_last() {
    let mut t = Test::new(false);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    let a1 = t.connect("a1", "alice", at(10));
    assert_eq!(t.presence_flips(&bob, "alice"), [true]);
    let a2 = t.connect("a2", "alice", at(20));
    let a3 = t.connect("a3", "alice", at(30));
    t.disconnect(&a1, Ending::Explicit, at(40));
    t.disconnect(&a2, Ending::Abnormal, at(50));
    assert_eq!(t.presence_flips(&bob, "alice"), Vec::<bool>::new());
    assert_eq!(t.engine.online_users(), 2);
    t.disconnect(&a3, Ending::Explicit, at(60));
    assert_eq!(t.presence_flips(&bob, "alice"), [false]);
    assert_eq!(
        t.seen_by("bob", "alice")["last_active"],
        json!("2027-01-15T08:00:00.060000Z")
    );
    assert_eq!(t.engine.online_users(), 1);
    assert_eq!(t.engine.open_connections(), 1);
}

#[test]
fn connections_beyond_the_limit_are_refused_and_change_nothing() {
    let mut t = Test::new(false);
    for c in ["a1", "a2", "a3"] {
        t.connect(c, "alice", at(0));
    }
    let refused = t
        .engine
        .connect(Arc::from("a4"), "alice", &JsonMap::new(), &[], at(1))
        .unwrap_err();
    assert_eq!(refused.code(), 71);
    t.pump();
    assert!(t.take(&Arc::from("a4")).is_empty());
    assert_eq!(t.engine.open_connections(), 3);
}

#[test]
fn at_the_limit_the_oldest_dead_connection_gives_way_without_a_presence_flip() {
    let mut t = Test::new(false);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    let [a1, a2, a3] = ["a1", "a2", "a3"].map(|c| t.connect(c, "alice", at(0)));
    t.take(&bob);
    assert!(t.engine.connections_at_cap("bob").is_empty());
    assert_eq!(
        t.engine.connections_at_cap("alice"),
        [a1.clone(), a2.clone(), a3.clone()]
    );

    // Connections of someone else, or unknown ones, never make room.
    let not_hers = [Arc::clone(&bob), Arc::from("zz")];
    let refused = t
        .engine
        .connect(Arc::from("a4"), "alice", &JsonMap::new(), &not_hers, at(1))
        .unwrap_err();
    assert_eq!(refused.code(), 71);

    // Of the dead ones named, the oldest is replaced.
    let replaced = t
        .engine
        .connect(
            Arc::from("a4"),
            "alice",
            &JsonMap::new(),
            &[a3.clone(), a2.clone()],
            at(2),
        )
        .unwrap();
    assert_eq!(replaced, Some(a2.clone()));
    t.pump();
    assert_eq!(t.take(&Arc::from("a4"))[0]["type"], HEALTH_CHECK);
    assert_eq!(
        t.engine.connections_at_cap("alice"),
        [a1, a3, Arc::from("a4")]
    );
    assert_eq!(t.engine.open_connections(), 4);
    assert_eq!(t.engine.poll_timeout(), None, "no grace window opens");
    assert_eq!(t.presence_flips(&bob, "alice"), Vec::<bool>::new());
}

#[test]
fn a_user_at_a_limit_of_one_replacing_a_dead_connection_stays_online() {
    let mut t = Test::new(false);
    t.engine = Engine::new(
        Config {
            offline_grace: Duration::ZERO,
            watch_implies_presence: false,
            max_connections_per_user: 1,
            max_channels_per_user: 1000,
            last_active_refresh: REFRESH,
            max_follows_per_connection: 5000,
            distinct_channel_key: distinct_channel_key("a secret"),
            webhook_url: None,
            webhook_events: Vec::new(),
        },
        Vec::new(),
        Vec::new(),
    );
    let a1 = t.connect("a1", "alice", at(0));
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    t.take(&bob);
    let replaced = t
        .engine
        .connect(
            Arc::from("a2"),
            "alice",
            &JsonMap::new(),
            std::slice::from_ref(&a1),
            at(5),
        )
        .unwrap();
    assert_eq!(replaced, Some(a1));
    t.pump();
    assert_eq!(t.engine.online_users(), 2);
    assert_eq!(t.presence_flips(&bob, "alice"), Vec::<bool>::new());
}

#[test]
fn an_abnormal_end_waits_out_the_grace_window_and_a_quick_reconnect_hides_it() {
    let mut t = Test::new(false);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    let a1 = t.connect("a1", "alice", at(0));
    t.take(&bob);
    assert_eq!(t.engine.poll_timeout(), None);

    t.disconnect(&a1, Ending::Abnormal, at(1000));
    assert_eq!(t.engine.poll_timeout(), Some(at(4000)));
    assert_eq!(
        t.seen_by("bob", "alice")["online"],
        true,
        "online during the grace window"
    );
    let a2 = t.connect("a2", "alice", at(2500));
    assert_eq!(
        t.engine.poll_timeout(),
        None,
        "a reconnect ends the grace window"
    );
    t.engine.handle_timeout(at(4000));
    t.pump();
    assert_eq!(t.presence_flips(&bob, "alice"), Vec::<bool>::new());

    t.disconnect(&a2, Ending::Abnormal, at(5000));
    t.engine.handle_timeout(at(7999));
    t.pump();
    assert_eq!(t.presence_flips(&bob, "alice"), Vec::<bool>::new());
    assert_eq!(t.engine.poll_timeout(), Some(at(8000)));
    t.engine.handle_timeout(at(8000));
    t.pump();
    let offline = t.taken(&bob, USER_PRESENCE_CHANGED);
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["user"]["online"], false);
    assert_eq!(offline[0]["created_at"], json!(event_time(at(8000))));
    assert_eq!(t.engine.poll_timeout(), None);
}

#[test]
fn an_explicit_close_goes_offline_at_once() {
    let mut t = Test::new(false);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    let a1 = t.connect("a1", "alice", at(0));
    t.take(&bob);
    t.disconnect(&a1, Ending::Explicit, at(100));
    assert_eq!(t.presence_flips(&bob, "alice"), [false]);
    assert_eq!(t.engine.poll_timeout(), None);
    assert!(t.writes.iter().any(
        |w| matches!(w, Write::TouchLastActive(id, when) if id == "alice" && *when == at(100))
    ));
}

#[test]
fn an_invisible_user_looks_offline_on_every_surface() {
    let mut t = Test::new(false);
    t.channel("room", &["alice", "bob"]);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    t.watch(&bob, "bob", "room", true, at(0));
    t.take(&bob);
    let alice = t.connect_with("a1", "alice", json!({ "invisible": true }), at(10));
    let state = t.watch(&alice, "alice", "room", true, at(20));
    // Alice herself sees the truth.
    let own = state["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(own["user"]["online"], true);
    assert_eq!(own["user"]["invisible"], true);
    // Bob hears nothing: no presence flip, no watching start, no update.
    let partial = PartialUserUpdate {
        id: "alice".into(),
        set: map(json!({ "status": "busy" })),
        unset: Vec::new(),
    };
    t.engine
        .partial_update_users(&Caller::User("alice".into()), &[partial], at(30))
        .unwrap();
    t.pump();
    assert_eq!(t.take(&bob), Vec::<Value>::new());
    assert_eq!(
        t.taken(&alice, USER_UPDATED).len(),
        1,
        "her own connection hears her update"
    );
    // Queries and channel state show her offline, without the own-only field.
    let seen = t.seen_by("bob", "alice");
    assert_eq!(seen["online"], false);
    assert!(seen.get("invisible").is_none());
    let room = t.watch(&bob, "bob", "room", true, at(40));
    assert_eq!(room["watcher_count"], 1);
    assert_eq!(room["watchers"].as_array().unwrap().len(), 1);
    let member = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(member["user"]["online"], false);
    assert_eq!(t.engine.online_users(), 1);
}

#[test]
fn each_event_type_reaches_its_audience_only() {
    let mut t = Test::new(false);
    t.channel("room", &["alice", "bob", "carol"]);
    let bob = t.connect("b1", "bob", at(0));
    let carol = t.connect("c1", "carol", at(0));
    let dave = t.connect("d1", "dave", at(0));
    t.watch(&bob, "bob", "room", true, at(0));
    t.watch(&carol, "carol", "room", false, at(0));
    t.follow(&dave, "dave", &["alice"]);
    for c in [&bob, &carol, &dave] {
        t.take(c);
    }
    let alice = t.connect("a1", "alice", at(10));
    // Presence: followers and presence watchers of her channels, not a watcher without presence.
    assert_eq!(t.presence_flips(&bob, "alice"), [true]);
    assert_eq!(t.presence_flips(&dave, "alice"), [true]);
    assert_eq!(t.presence_flips(&carol, "alice"), Vec::<bool>::new());
    assert_eq!(t.presence_flips(&alice, "alice"), [true]);
    // Updates: herself (own view) and the same audience (public view).
    let partial = PartialUserUpdate {
        id: "alice".into(),
        set: map(json!({ "status": "away" })),
        unset: Vec::new(),
    };
    t.engine
        .partial_update_users(&Caller::User("alice".into()), &[partial], at(20))
        .unwrap();
    t.pump();
    let mine = t.taken(&alice, USER_UPDATED);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["user"]["invisible"], false);
    let public = t.taken(&dave, USER_UPDATED);
    assert_eq!(public.len(), 1);
    assert_eq!(public[0]["user"]["status"], "away");
    assert!(public[0]["user"].get("invisible").is_none());
    assert_eq!(t.taken(&bob, USER_UPDATED).len(), 1);
    assert_eq!(t.taken(&carol, USER_UPDATED).len(), 0);
    // Watching: every other watcher, never the connection that started watching, never a non-watcher.
    t.watch(&alice, "alice", "room", false, at(30));
    for c in [&bob, &carol] {
        let start = t.taken(c, USER_WATCHING_START);
        assert_eq!(start.len(), 1);
        assert_eq!(start[0]["watcher_count"], 3);
        assert_eq!(start[0]["cid"], "messaging:room");
    }
    assert_eq!(t.taken(&alice, USER_WATCHING_START).len(), 0);
    assert_eq!(t.taken(&dave, USER_WATCHING_START).len(), 0);
}

#[test]
fn watch_implies_presence_when_configured() {
    let mut t = Test::new(true);
    t.channel("room", &["alice", "carol"]);
    let carol = t.connect("c1", "carol", at(0));
    t.watch(&carol, "carol", "room", false, at(0));
    t.connect("a1", "alice", at(10));
    assert_eq!(t.presence_flips(&carol, "alice"), [true]);
}

#[test]
fn watchers_start_once_per_user_and_stop_with_their_last_connection() {
    let mut t = Test::new(false);
    t.channel("room", &["alice", "bob"]);
    let bob = t.connect("b1", "bob", at(0));
    t.watch(&bob, "bob", "room", false, at(0));
    let a1 = t.connect("a1", "alice", at(0));
    let a2 = t.connect("a2", "alice", at(0));
    t.watch(&a1, "alice", "room", false, at(10));
    assert_eq!(t.taken(&bob, USER_WATCHING_START).len(), 1);
    let state = t.watch(&a2, "alice", "room", false, at(20));
    assert_eq!(state["watcher_count"], 2, "distinct users: {state}");
    assert_eq!(
        t.taken(&bob, USER_WATCHING_START).len(),
        0,
        "a second tab does not start again"
    );

    t.engine
        .stop_watching(
            &Caller::User("alice".into()),
            Some(&a1),
            "messaging:room",
            at(30),
        )
        .unwrap();
    t.pump();
    assert_eq!(
        t.taken(&bob, USER_WATCHING_STOP).len(),
        0,
        "her other tab still watches"
    );
    t.disconnect(&a2, Ending::Explicit, at(40));
    let stop = t.taken(&bob, USER_WATCHING_STOP);
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["watcher_count"], 1);
    assert_eq!(stop[0]["user"]["id"], "alice");

    // Another user's connection may not be subscribed by a user token.
    t.engine
        .stop_watching(
            &Caller::User("alice".into()),
            Some(&bob),
            "messaging:room",
            at(50),
        )
        .unwrap();
    t.pump();
    let state = t.watch(&bob, "bob", "room", false, at(60));
    assert_eq!(state["watcher_count"], 1);
    let unknown = t
        .engine
        .stop_watching(&Caller::Server, None, "messaging:nowhere", at(70))
        .unwrap_err();
    assert_eq!(unknown.code(), 16);
}

#[test]
fn a_health_check_is_answered_on_its_connection_only() {
    let mut t = Test::new(false);
    let a1 = t.connect("a1", "alice", at(0));
    let a2 = t.connect("a2", "alice", at(0));
    t.take(&a1);
    t.engine.health_check(&a1, at(500));
    t.pump();
    let reply = t.take(&a1);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0]["type"], HEALTH_CHECK);
    assert_eq!(reply[0]["connection_id"], "a1");
    assert_eq!(
        reply[0]["me"]["last_active"],
        json!("2027-01-15T08:00:00.500000Z")
    );
    assert!(t.take(&a2).is_empty());
}

#[test]
fn a_watch_outlives_an_abnormal_end_for_the_grace_window() {
    let mut t = Test::new(false);
    t.channel("room", &["alice", "bob"]);
    t.channel("hall", &["alice", "bob"]);
    let bob = t.connect("b1", "bob", at(0));
    t.watch(&bob, "bob", "room", false, at(0));
    t.watch(&bob, "bob", "hall", false, at(0));
    let a1 = t.connect("a1", "alice", at(0));
    t.watch(&a1, "alice", "room", false, at(10));
    t.watch(&a1, "alice", "hall", false, at(10));
    t.take(&bob);

    // The socket drops: nothing yet, and alice still counts as a watcher of both channels.
    t.disconnect(&a1, Ending::Abnormal, at(100));
    assert_eq!(t.take(&bob), Vec::<Value>::new());
    assert_eq!(t.engine.poll_timeout(), Some(at(3100)));
    let state = t.watch(&bob, "bob", "room", false, at(200));
    assert_eq!(state["watcher_count"], 2, "{state}");
    assert_eq!(ids_of(&state["watchers"]), ["alice", "bob"]);

    // She reconnects and re-watches one channel within the window: bob hears nothing about it.
    let a2 = t.connect("a2", "alice", at(500));
    t.watch(&a2, "alice", "room", false, at(600));
    assert_eq!(t.taken(&bob, USER_WATCHING_START), Vec::<Value>::new());
    t.engine.handle_timeout(at(3099));
    t.pump();
    assert_eq!(t.take(&bob), Vec::<Value>::new());
    // The other one she did not return to: it stops when the window ends, with the count that follows.
    t.engine.handle_timeout(at(3100));
    t.pump();
    let stops = t.taken(&bob, USER_WATCHING_STOP);
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0]["cid"], "messaging:hall");
    assert_eq!(stops[0]["watcher_count"], 1);
    assert_eq!(
        stops[0]["user"]["online"], true,
        "she is back: {}",
        stops[0]
    );
    assert_eq!(t.engine.poll_timeout(), None);

    // An explicit stop-watching, or an explicit close, ends a lingering watch at once.
    t.disconnect(&a2, Ending::Abnormal, at(4000));
    let a3 = t.connect("a3", "alice", at(4100));
    t.engine
        .stop_watching(
            &Caller::User("alice".into()),
            Some(&a3),
            "messaging:room",
            at(4200),
        )
        .unwrap();
    t.pump();
    assert_eq!(t.taken(&bob, USER_WATCHING_STOP).len(), 1);
    t.watch(&a3, "alice", "hall", false, at(4300));
    assert_eq!(t.taken(&bob, USER_WATCHING_START).len(), 1);
    let a4 = t.connect("a4", "alice", at(4400));
    t.disconnect(&a3, Ending::Abnormal, at(4500));
    t.disconnect(&a4, Ending::Explicit, at(4600));
    let got = t.take(&bob);
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, [USER_WATCHING_STOP], "{got:?}");
    assert_eq!(got[0]["user"]["online"], false, "{}", got[0]);
    assert_eq!(t.engine.poll_timeout(), None);

    // An invisible user leaves nothing lingering (there was nothing to see).
    let a5 = t.connect_with("a5", "alice", json!({ "invisible": true }), at(5000));
    t.watch(&a5, "alice", "hall", false, at(5100));
    t.disconnect(&a5, Ending::Abnormal, at(5200));
    assert_eq!(t.engine.poll_timeout(), None);
    assert_eq!(t.take(&bob), Vec::<Value>::new());
}

#[test]
fn switching_invisibility_alone_is_not_a_profile_change() {
    let mut t = Test::new(false);
    let bob = t.connect("b1", "bob", at(0));
    t.follow(&bob, "bob", &["alice"]);
    let a1 = t.connect("a1", "alice", at(100));
    t.disconnect(&a1, Ending::Explicit, at(200));
    t.take(&bob);
    let before = t.seen_by("bob", "alice");
    let partial = |invisible: bool| -> Vec<PartialUserUpdate> {
        serde_json::from_value(json!([{ "id": "alice", "set": { "invisible": invisible } }]))
            .unwrap()
    };

    // Invisible while offline, online (invisibly) and offline again, visible again while offline: to bob,
    // nothing at all happened, last_active and updated_at included.
    t.engine
        .partial_update_users(&Caller::Server, &partial(true), at(300))
        .unwrap();
    let a2 = t.connect("a2", "alice", at(400));
    t.engine.health_check(&a2, at(500));
    t.disconnect(&a2, Ending::Abnormal, at(600));
    t.engine
        .partial_update_users(&Caller::Server, &partial(false), at(700))
        .unwrap();
    t.pump();
    assert_eq!(t.take(&bob), Vec::<Value>::new());
    assert_eq!(t.seen_by("bob", "alice"), before);

    // Back while connected: like connecting, active now.
    let a3 = t.connect("a3", "alice", at(800));
    t.engine
        .partial_update_users(&Caller::Server, &partial(true), at(900))
        .unwrap();
    t.pump();
    t.take(&bob);
    t.engine
        .partial_update_users(&Caller::Server, &partial(false), at(1000))
        .unwrap();
    t.pump();
    let got = t.take(&bob);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], USER_PRESENCE_CHANGED);
    assert_eq!(got[0]["user"]["last_active"], json!(record(at(1000))));
    assert_eq!(got[0]["user"]["updated_at"], before["updated_at"]);
    // Her own connection hears of each switch.
    let own = t.taken(&a3, USER_UPDATED);
    assert_eq!(own.len(), 2, "{own:?}");
}

/// The `last_active` stamps written for `user` since the last look, as milliseconds after `at(0)`.
fn stamps_written(t: &mut Test, user: &str) -> Vec<i64> {
    let stamps = t
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::TouchLastActive(id, when) if id == user => Some(*when),
            Write::SaveUser(rec) if rec.id == user => rec.last_active,
            _ => None,
        })
        .map(|when| (when - at(0)).num_milliseconds())
        .collect();
    t.writes.clear();
    stamps
}

/// A client's keep-alive ping at `now`; the `last_active` its reply carries.
fn ping(t: &mut Test, conn: &ConnId, now: DateTime<Utc>) -> Value {
    t.engine.health_check(conn, now);
    t.pump();
    let reply = t.taken(conn, HEALTH_CHECK);
    assert_eq!(reply.len(), 1, "{reply:?}");
    reply[0]["me"]["last_active"].clone()
}

#[test]
fn pings_refresh_last_active_for_everyone_but_write_it_once_per_refresh_interval() {
    const PING_MS: i64 = 25_000;
    let refresh_ms = REFRESH.as_millis() as i64;
    let mut t = Test::new(false);
    t.writes.clear();
    t.connect("b1", "bob", at(0));
    let alice = t.connect("a1", "alice", at(0));
    assert_eq!(
        stamps_written(&mut t, "alice"),
        [0],
        "the connect is written"
    );
    // Every ping moves what alice and others read; none writes until the stored stamp is REFRESH old.
    let mut now = 0;
    while now + PING_MS < refresh_ms {
        now += PING_MS;
        assert_eq!(ping(&mut t, &alice, at(now)), json!(record(at(now))));
        assert_eq!(
            t.seen_by("bob", "alice")["last_active"],
            json!(record(at(now)))
        );
    }
    assert_eq!(stamps_written(&mut t, "alice"), Vec::<i64>::new());
    // The first ping REFRESH after the connect writes once, and the clock starts over from it.
    now += PING_MS;
    ping(&mut t, &alice, at(now));
    assert_eq!(stamps_written(&mut t, "alice"), [now]);
    let refreshed = now;
    ping(&mut t, &alice, at(now + 1));
    ping(&mut t, &alice, at(refreshed + refresh_ms - 1));
    assert_eq!(stamps_written(&mut t, "alice"), Vec::<i64>::new());
    ping(&mut t, &alice, at(refreshed + refresh_ms));
    assert_eq!(stamps_written(&mut t, "alice"), [refreshed + refresh_ms]);
    // Leaving is always written, however recent the last write.
    t.disconnect(&alice, Ending::Explicit, at(refreshed + refresh_ms + 10));
    assert_eq!(
        stamps_written(&mut t, "alice"),
        [refreshed + refresh_ms + 10]
    );
    assert_eq!(
        t.seen_by("bob", "alice")["last_active"],
        json!(record(at(refreshed + refresh_ms + 10)))
    );
}

#[test]
fn only_the_end_of_the_last_connection_is_written_even_when_it_ends_abnormally() {
    let mut t = Test::new(false);
    let a1 = t.connect("a1", "alice", at(0));
    let a2 = t.connect("a2", "alice", at(1_000));
    assert_eq!(
        stamps_written(&mut t, "alice"),
        [0, 1_000],
        "each connect is written"
    );
    ping(&mut t, &a1, at(2_000));
    t.disconnect(&a1, Ending::Explicit, at(3_000));
    assert_eq!(stamps_written(&mut t, "alice"), Vec::<i64>::new());
    ping(&mut t, &a2, at(4_000));
    t.disconnect(&a2, Ending::Abnormal, at(5_000));
    assert_eq!(stamps_written(&mut t, "alice"), [5_000]);
    // A ping of a connected user whose stamp was written by a profile write counts from that write.
    let a3 = t.connect("a3", "alice", at(10_000));
    ping(&mut t, &a3, at(11_000));
    t.engine
        .partial_update_users(
            &Caller::Server,
            &[
                serde_json::from_value(json!({ "id": "alice", "set": { "status": "away" } }))
                    .unwrap(),
            ],
            at(12_000),
        )
        .unwrap();
    t.pump();
    assert_eq!(stamps_written(&mut t, "alice"), [10_000, 11_000]);
    let refresh_ms = REFRESH.as_millis() as i64;
    ping(&mut t, &a3, at(11_000 + refresh_ms - 1));
    assert_eq!(stamps_written(&mut t, "alice"), Vec::<i64>::new());
    ping(&mut t, &a3, at(11_000 + refresh_ms));
    assert_eq!(stamps_written(&mut t, "alice"), [11_000 + refresh_ms]);
}

#[test]
fn shutdown_writes_the_stamp_of_everyone_connected() {
    let mut t = Test::new(false);
    let alice = t.connect("a1", "alice", at(0));
    ping(&mut t, &alice, at(25_000));
    t.writes.clear();
    t.engine.shutdown("", at(30_000));
    t.pump();
    assert_eq!(stamps_written(&mut t, "alice"), [30_000]);
    assert_eq!(stamps_written(&mut t, "bob"), Vec::<i64>::new());
}

fn ids_of(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

fn record(t: DateTime<Utc>) -> String {
    crate::model::record_time(t)
}
