//! Twin users for the privacy matrices: `sx` hides (goes invisible, or makes its presence visible to nobody:
//! [`Hiding`]), `sy` is its offline twin. Both are built alike (same
//! fields, each a member of a channel of its own with the same viewer) and every step of a scenario acts on
//! both, one after the other, in the same pattern: where `sx` goes invisible, `sy` goes offline. After each step a
//! viewer reads every surface another user can reach, for `sx` and for `sy`, and the two readings must be equal
//! once the differences we made ourselves are named alike: ids (`S`, `C`) and times. A time becomes the name of
//! the step during which it was stamped, so the invisible user's `last_active` must date from the step in which
//! the offline twin left, not from anything the invisible user did later.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use presence_protocol::codes::event_type;
use serde_json::{json, Value};

use crate::common::*;

pub mod scenarios;

/// One subject's part of a step. (Each matrix builds some of them.)
#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
pub enum Act {
    /// Connect with `user_details` {id, name, rank}: visible unless the stored flag says otherwise.
    Connect,
    /// Connect with `invisible: true` in `user_details`.
    ConnectInvisible,
    /// Connect with `invisible: false` in `user_details`.
    ConnectVisible,
    /// Watch the subject's channel on its connection, with presence.
    Watch,
    /// A client `health.check` (refreshes the subject's own `last_active`).
    Ping,
    /// Close with 1000, until the server has let the connection go.
    Close,
    /// Drop the TCP connection without a close frame, until the server has noticed.
    Drop,
    /// Wait until the subject is offline in its own view (the grace window is over).
    AwaitOffline,
    /// `PATCH /users` setting only `invisible`, with the subject's own token or a server token.
    Partial { server: bool, invisible: bool },
    /// `POST /users` (server token) with the same fields as always and `invisible`.
    Upsert { invisible: bool },
    /// The subject's own `PATCH /users` of its `status` (a new value each time): a profile change.
    Status,
}

/// How the hiding subject hides: what `invisible` in an [`Act`] sets. (Each matrix uses one.)
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hiding {
    /// The `invisible` flag.
    Invisible,
    /// `privacy_settings.presence.visible_to`: `"nobody"` for hidden, `"everyone"` for visible.
    Nobody,
}

impl Hiding {
    /// The fields that hide the subject (`hidden`) or show it again.
    fn fields(self, hidden: bool) -> Value {
        match self {
            Hiding::Invisible => json!({ "invisible": hidden }),
            Hiding::Nobody => json!({ "privacy_settings": { "presence": {
                "visible_to": if hidden { "nobody" } else { "everyone" }
            } } }),
        }
    }

    /// `user` with the fields that hide it or show it again.
    fn apply(self, mut user: Value, hidden: bool) -> Value {
        if let (Value::Object(user), Value::Object(fields)) = (&mut user, self.fields(hidden)) {
            user.extend(fields);
        }
        user
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// What the invisible subject does, then what its offline twin does.
    Twin(&'static [Act], &'static [Act]),
    /// The server stops (SIGTERM) and starts again on the same database.
    Restart,
}

pub struct Scenario {
    pub name: &'static str,
    pub steps: &'static [Step],
}

const INVISIBLE: Subject = Subject {
    id: "sx",
    channel: "cx",
};
const OFFLINE: Subject = Subject {
    id: "sy",
    channel: "cy",
};
const VIEWER: &str = "viewer";
/// A user the viewer follows: an update of theirs, heard by the viewer, closes each batch of events.
const FENCE: &str = "fence";
const ALWAYS_ONLINE: &str = "r-online";
const NEVER_SEEN: &str = "r-never";
const GRACE_MS: u64 = 400;

#[derive(Clone, Copy)]
struct Subject {
    id: &'static str,
    channel: &'static str,
}

impl Subject {
    fn cid(&self) -> String {
        format!("messaging:{}", self.channel)
    }

    /// Whether an event the viewer got is about this subject or its channel.
    fn concerns(&self, ev: &Value) -> bool {
        ev["user"]["id"] == self.id || ev["cid"] == self.cid().as_str()
    }

    /// `v` with this subject's ids and every time named alike.
    fn normalized(&self, v: &Value, timeline: &Timeline) -> Value {
        match v {
            Value::String(s) if s == self.id => json!("S"),
            Value::String(s) if s == self.channel => json!("C"),
            Value::String(s) if *s == self.cid() => json!("messaging:C"),
            Value::String(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => json!(timeline.name_of(t.with_timezone(&Utc))),
                Err(_) => v.clone(),
            },
            Value::Array(items) => items.iter().map(|i| self.normalized(i, timeline)).collect(),
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "duration")
                    .map(|(k, v)| (k.clone(), self.normalized(v, timeline)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Names of the stretches of time a scenario went through: each mark starts a stretch that lasts until the
/// next one. Both halves of a step get the step's name.
#[derive(Default)]
struct Timeline {
    marks: Vec<(DateTime<Utc>, String)>,
}

impl Timeline {
    async fn mark(&mut self, name: &str) {
        // Stored times have microseconds: a mark rounded down to them still precedes what follows it.
        self.marks
            .push((Utc::now().trunc_subsecs(6), name.to_string()));
        // No two marks within one microsecond.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    fn name_of(&self, t: DateTime<Utc>) -> String {
        match self.marks.iter().rev().find(|(start, _)| *start <= t) {
            Some((_, name)) => name.clone(),
            None => format!("before the scenario ({t})"),
        }
    }
}

struct World {
    scenario: &'static str,
    hiding: Hiding,
    /// Status updates each subject made so far.
    statuses: [usize; 2],
    opts: ServerOpts,
    server: Server,
    _dir: tempfile::TempDir,
    viewer: Ws,
    always_online: Ws,
    subject_ws: [Option<Ws>; 2],
    timeline: Timeline,
    /// Users created by the ticks between steps, oldest first.
    ticks: Vec<String>,
    fences: u64,
    /// Events about the offline twin the viewer heard so far (proof that the event surface is live).
    heard_about_offline: usize,
}

/// Runs a scenario, the subject hiding as `hiding` says; panics at the first surface where the two differ.
pub async fn run_hiding(scenario: &Scenario, hiding: Hiding) {
    let mut w = World::start(scenario.name, hiding).await;
    for (i, step) in scenario.steps.iter().enumerate() {
        let name = format!("step {}", i + 1);
        match step {
            Step::Twin(invisible, offline) => {
                w.timeline.mark(&name).await;
                w.perform(0, invisible).await;
                w.timeline.mark(&name).await;
                w.perform(1, offline).await;
            }
            Step::Restart => {
                w.timeline.mark(&name).await;
                w.restart().await;
            }
        }
        w.tick(i + 1).await;
        w.observe(&format!("{} {name} ({step:?})", scenario.name))
            .await;
    }
    assert!(
        w.heard_about_offline > 0,
        "{}: the viewer heard no event about the offline twin at all; the event surface was not tested",
        scenario.name
    );
}

const SUBJECTS: [Subject; 2] = [INVISIBLE, OFFLINE];

fn profile(id: &str) -> Value {
    json!({ "id": id, "name": "Twin", "rank": 2.5 })
}

impl World {
    async fn start(scenario: &'static str, hiding: Hiding) -> World {
        let dir = tempfile::tempdir().unwrap();
        let opts = ServerOpts::default()
            .grace(GRACE_MS)
            .db(dir.path().join("presence.db"));
        let server = Server::start_with(opts.clone()).await;
        let mut timeline = Timeline::default();
        timeline.mark("setup").await;
        server
            .upsert(&[
                json!({ "id": VIEWER }),
                json!({ "id": FENCE }),
                json!({ "id": ALWAYS_ONLINE, "rank": 100 }),
                json!({ "id": NEVER_SEEN }),
            ])
            .await;
        let always_online = server.connect(ALWAYS_ONLINE).await;
        for subject in SUBJECTS {
            server.upsert(&[profile(subject.id)]).await;
            server
                .create_channel(
                    "messaging",
                    subject.channel,
                    &[VIEWER, subject.id],
                    json!({}),
                )
                .await;
        }
        let viewer = server.connect(VIEWER).await;
        let mut w = World {
            scenario,
            hiding,
            statuses: [0, 0],
            opts,
            server,
            _dir: dir,
            viewer,
            always_online,
            subject_ws: [None, None],
            timeline,
            ticks: Vec::new(),
            fences: 0,
            heard_about_offline: 0,
        };
        w.subscribe_viewer().await;
        w.observe(&format!("{scenario} setup")).await;
        w
    }

    /// The viewer follows both subjects (and the fence) and watches both channels, with presence.
    async fn subscribe_viewer(&mut self) {
        let s = &self.server;
        s.subscribe_users(&self.viewer, &[INVISIBLE.id, OFFLINE.id, FENCE])
            .await;
        for subject in SUBJECTS {
            s.watch(&self.viewer, "messaging", subject.channel, true)
                .await;
        }
    }

    async fn perform(&mut self, side: usize, acts: &[Act]) {
        for act in acts {
            self.act(side, *act).await;
        }
    }

    async fn act(&mut self, side: usize, act: Act) {
        let subject = SUBJECTS[side];
        let s = &self.server;
        let connect = |details: Value| async move { s.connect_with(subject.id, details).await };
        match act {
            Act::Connect => self.subject_ws[side] = Some(connect(profile(subject.id)).await),
            Act::ConnectInvisible | Act::ConnectVisible => {
                let hidden = matches!(act, Act::ConnectInvisible);
                let details = self.hiding.apply(profile(subject.id), hidden);
                self.subject_ws[side] = Some(connect(details).await);
            }
            Act::Watch => {
                let ws = self.subject_ws[side]
                    .as_ref()
                    .expect("watch: not connected");
                s.watch(ws, "messaging", subject.channel, true).await;
            }
            Act::Ping => {
                let ws = self.subject_ws[side].as_mut().expect("ping: not connected");
                ws.health_ping().await;
            }
            Act::Close | Act::Drop => {
                let ws = self.subject_ws[side].take().expect("close: not connected");
                let open = s.metric("presence_open_connections").await;
                if matches!(act, Act::Close) {
                    ws.close(1000).await;
                } else {
                    ws.drop_tcp().await;
                }
                s.wait_metric("presence_open_connections", open - 1.0).await;
            }
            Act::AwaitOffline => {
                let deadline = tokio::time::Instant::now() + WAIT;
                while s.user_as(&Auth::user(subject.id), subject.id).await["online"] != false {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{} still online in its own view",
                        subject.id
                    );
                    sleep_ms(20).await;
                }
            }
            Act::Partial { server, invisible } => {
                let auth = if server {
                    Auth::Server
                } else {
                    Auth::user(subject.id)
                };
                s.partial_update(&auth, subject.id, self.hiding.fields(invisible), &[])
                    .await
                    .ok(200);
            }
            Act::Upsert { invisible } => {
                s.upsert(&[self.hiding.apply(profile(subject.id), invisible)])
                    .await;
            }
            Act::Status => {
                self.statuses[side] += 1;
                let status = format!("status {}", self.statuses[side]);
                s.partial_update(
                    &Auth::user(subject.id),
                    subject.id,
                    json!({ "status": status }),
                    &[],
                )
                .await
                .ok(200);
            }
        }
    }

    /// A shutdown as on SIGTERM, then the same database again; the viewer and the always-online user reconnect.
    async fn restart(&mut self) {
        self.server.shut_down().await;
        // What the viewer's old connection got before it closed still counts.
        let mut heard = Vec::new();
        loop {
            match self.viewer.next(WAIT).await {
                Some(Incoming::Json(v)) => heard.push(v),
                Some(Incoming::Close(..)) | Some(Incoming::Ended(_)) => break,
                Some(_) => {}
                None => panic!("the viewer's connection outlived the server"),
            }
        }
        self.subject_ws = [None, None];
        self.server = Server::start_with(self.opts.clone()).await;
        self.always_online = self.server.connect(ALWAYS_ONLINE).await;
        self.viewer = self.server.connect(VIEWER).await;
        self.subscribe_viewer().await;
        let when = format!("{}: the restart", self.scenario);
        self.compare_events(heard, &when);
    }

    /// A user stamped entirely within its own stretch of time (created, online, offline), ranked after the
    /// previous ones: sorting on any field places each subject relative to these.
    async fn tick(&mut self, n: usize) {
        let name = format!("r{n}");
        self.timeline.mark(&format!("tick {n}")).await;
        let s = &self.server;
        s.upsert(&[json!({ "id": name, "rank": n })]).await;
        let ws = s.connect(&name).await;
        let open = s.metric("presence_open_connections").await;
        ws.close(1000).await;
        s.wait_metric("presence_open_connections", open - 1.0).await;
        self.ticks.push(name);
        self.timeline.mark(&format!("after tick {n}")).await;
    }

    /// Every event the viewer got since the last call: a fence update, heard last, closes the batch.
    async fn viewer_events(&mut self) -> Vec<Value> {
        self.fences += 1;
        let fence = self.fences;
        self.server
            .partial_update(&Auth::Server, FENCE, json!({ "n": fence }), &[])
            .await
            .ok(200);
        let mut events = Vec::new();
        loop {
            match self.viewer.next(WAIT).await {
                Some(Incoming::Json(v)) => {
                    if v["type"] == event_type::USER_UPDATED
                        && v["user"]["id"] == FENCE
                        && v["user"]["n"] == fence
                    {
                        return events;
                    }
                    events.push(v);
                }
                other => panic!(
                    "{}: the viewer's connection gave {other:?} while waiting for fence {fence}",
                    self.scenario
                ),
            }
        }
    }

    fn compare_events(&mut self, events: Vec<Value>, when: &str) {
        let [invisible, offline] = SUBJECTS.map(|subject| {
            let about: Vec<Value> = events
                .iter()
                .filter(|ev| subject.concerns(ev))
                .cloned()
                .collect();
            (
                about.len(),
                subject.normalized(&Value::Array(about), &self.timeline),
            )
        });
        self.heard_about_offline += offline.0;
        assert_same(when, "events heard by the viewer", &invisible.1, &offline.1);
    }

    /// Reads every surface for both subjects and compares.
    async fn observe(&mut self, when: &str) {
        let events = self.viewer_events().await;
        self.compare_events(events, when);
        for surface in self.surfaces() {
            let invisible = self.read(0, &surface).await;
            let offline = self.read(1, &surface).await;
            assert_same(when, &surface.describe(), &invisible, &offline);
        }
    }

    fn surfaces(&self) -> Vec<Surface> {
        let mut surfaces = vec![
            Surface::Channel,
            Surface::QueryChannelsByCid,
            Surface::QueryChannelsByMember,
        ];
        for online in [None, Some(true), Some(false)] {
            surfaces.push(Surface::ServerUsers { online });
            surfaces.push(Surface::Users { online, sort: None });
            for field in [
                "id",
                "created_at",
                "updated_at",
                "last_active",
                "online",
                "rank",
            ] {
                for direction in [1, -1] {
                    surfaces.push(Surface::Users {
                        online,
                        sort: Some((field, direction)),
                    });
                }
            }
        }
        surfaces
    }

    /// What the viewer reads on `surface` about one subject, normalized.
    async fn read(&self, side: usize, surface: &Surface) -> Value {
        let subject = SUBJECTS[side];
        let s = &self.server;
        let viewer = Auth::user(VIEWER);
        let users = |online: &Option<bool>| {
            let mut ids: Vec<&str> = vec![ALWAYS_ONLINE, NEVER_SEEN, subject.id];
            ids.extend(self.ticks.iter().map(String::as_str));
            let mut filter = json!({ "id": { "$in": ids } });
            if let Some(online) = online {
                filter = json!({ "$and": [filter, { "online": online }] });
            }
            json!({ "filter_conditions": filter, "limit": 100 })
        };
        let body = match surface {
            Surface::Users { online, sort } => {
                let mut payload = users(online);
                if let Some((field, direction)) = sort {
                    payload["sort"] = json!([{ "field": field, "direction": direction }]);
                }
                s.query_users(&viewer, None, payload).await.ok(200)["users"].clone()
            }
            Surface::ServerUsers { online } => {
                s.query_users(&Auth::Server, None, users(online))
                    .await
                    .ok(200)["users"]
                    .clone()
            }
            Surface::Channel => s
                .query_channel(
                    &viewer,
                    None,
                    "messaging",
                    Some(subject.channel),
                    json!({ "state": true, "watchers": { "limit": 10 }, "members": { "limit": 10 } }),
                )
                .await
                .ok(201)
                .clone(),
            Surface::QueryChannelsByCid | Surface::QueryChannelsByMember => {
                let filter = if matches!(surface, Surface::QueryChannelsByCid) {
                    json!({ "cid": subject.cid() })
                } else {
                    json!({ "members": { "$in": [subject.id] } })
                };
                let body = s
                    .query_channels(&viewer, None, json!({ "filter_conditions": filter, "state": true }))
                    .await
                    .ok(201)
                    .clone();
                assert_eq!(
                    body["channels"].as_array().map(Vec::len),
                    Some(1),
                    "queryChannels {filter}: {body}"
                );
                body
            }
        };
        subject.normalized(&body, &self.timeline)
    }
}

enum Surface {
    /// queryUsers over the reference users and the subject, maybe filtered on `online`, maybe sorted.
    Users {
        online: Option<bool>,
        sort: Option<(&'static str, i64)>,
    },
    /// queryUsers with a server token (what a backend reads), maybe filtered on `online`.
    ServerUsers {
        online: Option<bool>,
    },
    /// The subject's channel: members, watchers, `watcher_count`.
    Channel,
    QueryChannelsByCid,
    QueryChannelsByMember,
}

impl Surface {
    fn describe(&self) -> String {
        match self {
            Surface::Users { online, sort } => format!(
                "queryUsers{}{}",
                online.map_or(String::new(), |o| format!(" online:{o}")),
                sort.map_or(String::new(), |(f, d)| format!(" sorted by {f} {d}"))
            ),
            Surface::ServerUsers { online } => format!(
                "queryUsers with a server token{}",
                online.map_or(String::new(), |o| format!(" online:{o}"))
            ),
            Surface::Channel => "channel query (members, watchers, watcher_count)".into(),
            Surface::QueryChannelsByCid => "queryChannels by cid".into(),
            Surface::QueryChannelsByMember => "queryChannels by member".into(),
        }
    }
}

fn assert_same(when: &str, surface: &str, invisible: &Value, offline: &Value) {
    if invisible == offline {
        return;
    }
    let mut diffs = Vec::new();
    differences(invisible, offline, "", &mut diffs);
    panic!(
        "{when}: {surface}: the hidden user and the offline one differ\n{}\n\nhidden:  {}\noffline: {}",
        diffs.join("\n"),
        serde_json::to_string_pretty(invisible).unwrap(),
        serde_json::to_string_pretty(offline).unwrap()
    );
}

/// Where two JSON values differ: one line per path, `invisible` value first.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(va, vb, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("  {path}: {a} vs {b}")),
        _ => {}
    }
}
