//! The live state of the server: users, open connections, channels and who is subscribed to whose presence.
//!
//! Every operation takes the one lock, changes state, queues database writes (in order, still under the lock),
//! and collects the frames to deliver. Frames are serialized once per audience class (the user's own connections,
//! everyone else) and handed to per-connection bounded queues after the lock is released.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use presence_protocol::codes::{close_code, error_code, event_type};
use presence_protocol::{
    ChannelConfig, ChannelMember, ChannelQueryRequest, ChannelResponse, ChannelStateResponse,
    Event, JsonMap, PartialUserUpdate, QueryChannelsRequest, QueryUsersPayload, SortParam, User,
};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::auth::Caller;
use crate::db::{DbHandle, DbOp, Loaded};
use crate::error::Failure;
use crate::fields::{self, WriteSource};
use crate::filter::{self, Filter};
use crate::model::{event_time, record_time, ChannelRecord, MemberRecord, UserRecord};

pub type ConnId = Arc<str>;

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub open_connections: AtomicI64,
    pub online_users: AtomicI64,
    pub events_sent: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// The sending side of one WebSocket connection.
pub struct ConnHandle {
    pub id: ConnId,
    pub user_id: String,
    queue: mpsc::Sender<Utf8Bytes>,
    evicted: Notify,
    evict_code: AtomicU16,
}

impl ConnHandle {
    pub fn new(user_id: &str, capacity: usize) -> (Arc<ConnHandle>, mpsc::Receiver<Utf8Bytes>) {
        let (queue, rx) = mpsc::channel(capacity);
        let handle = ConnHandle {
            id: uuid::Uuid::new_v4().to_string().into(),
            user_id: user_id.to_string(),
            queue,
            evicted: Notify::new(),
            evict_code: AtomicU16::new(0),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a frame; a consumer whose queue is full is evicted rather than buffered without bound.
    pub fn deliver(&self, frame: Utf8Bytes, metrics: &Metrics) {
        match self.queue.try_send(frame) {
            Ok(()) => {
                metrics.events_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.evict(close_code::SLOW_CONSUMER),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Asks the connection's task to close the socket with `code`.
    pub fn evict(&self, code: u16) {
        let _ = self
            .evict_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.evicted.notify_one();
    }

    /// Resolves with the close code once the connection has been evicted.
    pub async fn evicted(&self) -> u16 {
        self.evicted.notified().await;
        self.evict_code.load(Ordering::SeqCst)
    }
}

/// How a connection ended, as far as presence is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed with 1000 (`disconnectUser`): offline at once.
    Explicit,
    /// Anything else (network loss, 1001, 4001, pong timeout, eviction): offline after the grace window.
    Abnormal,
}

pub struct HubConfig {
    pub offline_grace: Duration,
    pub watch_implies_presence: bool,
    pub max_connections_per_user: usize,
}

struct Presence {
    conns: Vec<ConnId>,
    /// Set while the offline transition waits out the grace window; the value identifies the wait.
    grace: Option<u64>,
    /// The visible online state peers were last told.
    announced: bool,
}

struct UserEntry {
    rec: UserRecord,
    presence: Presence,
}

impl UserEntry {
    /// A user with no connections, announced offline.
    fn new(rec: UserRecord) -> Self {
        UserEntry {
            rec,
            presence: Presence {
                conns: Vec::new(),
                grace: None,
                announced: false,
            },
        }
    }

    fn connected(&self) -> bool {
        !self.presence.conns.is_empty() || self.presence.grace.is_some()
    }

    fn visible_online(&self) -> bool {
        self.connected() && !self.rec.invisible
    }

    /// The user as `viewer` sees them.
    fn view_for(&self, viewer: Option<&str>) -> User {
        if viewer == Some(self.rec.id.as_str()) {
            self.rec.own_view(self.connected())
        } else {
            self.rec.public_view(self.visible_online())
        }
    }
}

struct ConnEntry {
    handle: Arc<ConnHandle>,
    /// Users this connection follows through `queryUsers` with `presence: true`.
    followed_users: HashSet<String>,
    /// Channels this connection watches.
    watching: HashSet<String>,
}

struct ChannelEntry {
    rec: ChannelRecord,
    /// Watching connections, with whether they asked for members' presence.
    watchers: HashMap<ConnId, bool>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, UserEntry>,
    conns: HashMap<ConnId, ConnEntry>,
    channels: HashMap<String, ChannelEntry>,
    /// user id → cids of channels the user is a member of.
    member_of: HashMap<String, HashSet<String>>,
    /// user id → connections following them through `queryUsers`.
    followers: HashMap<String, HashSet<ConnId>>,
    grace_seq: u64,
}

/// Frames to hand to connection queues once the lock is released.
#[derive(Default)]
struct Outbox(Vec<(Arc<ConnHandle>, Utf8Bytes)>);

impl Outbox {
    fn push(&mut self, to: &Arc<ConnHandle>, frame: &Utf8Bytes) {
        self.0.push((Arc::clone(to), frame.clone()));
    }
}

pub struct Hub {
    state: Mutex<State>,
    db: DbHandle,
    pub metrics: Metrics,
    config: HubConfig,
}

fn frame(event: &Event) -> Utf8Bytes {
    // Serializing plain data to a string cannot fail.
    serde_json::to_string(event).unwrap_or_default().into()
}

fn event(kind: &str, now: DateTime<Utc>) -> Event {
    Event {
        kind: kind.to_string(),
        created_at: Some(event_time(now)),
        ..Event::default()
    }
}

const USER_SORT_DEFAULT: &[(&str, i64)] = &[("created_at", -1), ("id", -1)];
const CHANNEL_SORT_DEFAULT: &[(&str, i64)] =
    &[("last_message_at", -1), ("updated_at", -1), ("cid", 1)];

fn default_sort(keys: &[(&str, i64)]) -> Vec<SortParam> {
    keys.iter()
        .map(|(field, direction)| SortParam {
            field: field.to_string(),
            direction: *direction,
        })
        .collect()
}

fn page_bounds(
    limit: Option<u64>,
    offset: Option<u64>,
    default: u64,
    max: u64,
) -> Result<(usize, usize), Failure> {
    let limit = limit.unwrap_or(default);
    if limit > max {
        return Err(Failure::input(format!("limit must be at most {max}")));
    }
    let offset = offset.unwrap_or(0);
    if offset > 1000 {
        return Err(Failure::input("offset must be at most 1000"));
    }
    Ok((limit as usize, offset as usize))
}

fn channel_name_ok(s: &str, allow_bang: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || (allow_bang && c == '!'))
}

/// A stable id for the distinct channel of a member set (FNV-1a over the sorted ids).
fn distinct_channel_id(members: &[String]) -> String {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted.join("\u{0}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("!members-{hash:016x}")
}

/// Member ids named by channel data: strings or `{user_id}` objects.
fn member_ids(data: &JsonMap) -> Result<Vec<String>, Failure> {
    let Some(raw) = data.get("members") else {
        return Ok(Vec::new());
    };
    let items = raw
        .as_array()
        .ok_or_else(|| Failure::input("data.members must be an array"))?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(s) => s.clone(),
            Value::Object(o) => match o.get("user_id").and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => return Err(Failure::input("data.members objects need a user_id")),
            },
            _ => {
                return Err(Failure::input(
                    "data.members must hold user ids or {user_id} objects",
                ))
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

impl Hub {
    pub fn new(config: HubConfig, db: DbHandle, loaded: Loaded) -> Arc<Hub> {
        let mut state = State::default();
        for rec in loaded.users {
            state.users.insert(rec.id.clone(), UserEntry::new(rec));
        }
        for rec in loaded.channels {
            for m in &rec.members {
                state
                    .member_of
                    .entry(m.user_id.clone())
                    .or_default()
                    .insert(rec.cid.clone());
            }
            state.channels.insert(
                rec.cid.clone(),
                ChannelEntry {
                    rec,
                    watchers: HashMap::new(),
                },
            );
        }
        Arc::new(Hub {
            state: Mutex::new(state),
            db,
            metrics: Metrics::default(),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave state half-changed; recovering the guard keeps the server
        // answering rather than failing every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues collected frames. Called with the lock held, so every connection receives events in the order
    /// the state changed; queueing never blocks (a full queue evicts its connection).
    fn dispatch(&self, outbox: Outbox) {
        for (conn, frame) in outbox.0 {
            conn.deliver(frame, &self.metrics);
        }
    }

    /// Waits until every write queued so far is durable.
    pub async fn flush(&self) -> Result<(), Failure> {
        self.db
            .barrier()
            .await
            .map_err(|e| Failure::internal(format!("database write failed: {e}")))
    }

    fn save_user(&self, rec: &UserRecord) {
        self.db.send(DbOp::SaveUser(Box::new(rec.clone())));
    }

    // ----- connections -----

    /// Registers a new connection for `user_id`, applying `details` as on connect, and queues the first
    /// `health.check` frame on it before any other frame can reach it.
    /// Refused (code 71) when the user already holds the maximum number of connections.
    pub fn connect(
        self: &Arc<Self>,
        handle: &Arc<ConnHandle>,
        details: &JsonMap,
    ) -> Result<(), Failure> {
        let now = Utc::now();
        let mut outbox = Outbox::default();
        {
            let mut st = self.lock();
            let user_id = handle.user_id.clone();
            let open = st.users.get(&user_id).map_or(0, |u| u.presence.conns.len());
            if open >= self.config.max_connections_per_user {
                return Err(Failure::new(
                    error_code::TOO_MANY_CONNECTIONS,
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "user {user_id} already has {open} open connections (the limit is {})",
                        self.config.max_connections_per_user
                    ),
                ));
            }
            let entry = st
                .users
                .entry(user_id.clone())
                .or_insert_with(|| UserEntry::new(UserRecord::new(&user_id, now)));
            let mut changed = false;
            for (field, value) in details {
                changed |= fields::set_field(&mut entry.rec, field, value, WriteSource::Connect);
            }
            let invisible_changed = match fields::requested_invisible(details) {
                Some(inv) if inv != entry.rec.invisible => {
                    set_invisible(&mut entry.rec, inv, false, now);
                    true
                }
                _ => false,
            };
            if changed || invisible_changed {
                entry.rec.updated_at = now;
            }
            entry.rec.last_active = Some(now);
            entry.presence.conns.push(Arc::clone(&handle.id));
            entry.presence.grace = None;
            self.save_user(&entry.rec);
            let me = entry.rec.own_view(true);

            let mut hello = event(event_type::HEALTH_CHECK, now);
            hello.connection_id = Some(handle.id.to_string());
            hello.cid = Some("*".to_string());
            hello.me = Some(me);
            outbox.push(handle, &frame(&hello));
            st.conns.insert(
                Arc::clone(&handle.id),
                ConnEntry {
                    handle: Arc::clone(handle),
                    followed_users: HashSet::new(),
                    watching: HashSet::new(),
                },
            );
            self.metrics
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            let flipped = self.settle_presence(&mut st, &user_id, now, &mut outbox);
            if changed && !flipped {
                self.user_event(&st, &user_id, event_type::USER_UPDATED, now, &mut outbox);
            }
            if invisible_changed {
                self.watching_visibility_changed(&st, &user_id, now, &mut outbox);
            }
            self.dispatch(outbox);
        }
        Ok(())
    }

    /// Forgets a connection. The user goes offline at once after an explicit close, otherwise after the grace
    /// window unless another connection of theirs appears first.
    pub fn disconnect(self: &Arc<Self>, conn_id: &ConnId, ending: Ending) {
        let now = Utc::now();
        let mut outbox = Outbox::default();
        let mut grace_wait = None;
        {
            let mut st = self.lock();
            let Some(conn) = st.conns.remove(conn_id) else {
                return;
            };
            self.metrics
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
            let user_id = conn.handle.user_id.clone();
            for followed in &conn.followed_users {
                if let Some(set) = st.followers.get_mut(followed) {
                    set.remove(conn_id);
                    if set.is_empty() {
                        st.followers.remove(followed);
                    }
                }
            }
            for cid in &conn.watching {
                self.unwatch(&mut st, cid, conn_id, &user_id, now, &mut outbox);
            }
            let grace = self.config.offline_grace;
            let State {
                users, grace_seq, ..
            } = &mut *st;
            if let Some(entry) = users.get_mut(&user_id) {
                entry.presence.conns.retain(|c| c != conn_id);
                if entry.presence.conns.is_empty() {
                    // "Last seen" is the moment the last connection ended.
                    entry.rec.last_active = Some(now);
                    self.db.send(DbOp::TouchLastActive(user_id.clone(), now));
                    if ending == Ending::Abnormal && !grace.is_zero() {
                        *grace_seq += 1;
                        entry.presence.grace = Some(*grace_seq);
                        grace_wait = Some(*grace_seq);
                    }
                }
            }
            if grace_wait.is_none() {
                self.settle_presence(&mut st, &user_id, now, &mut outbox);
            }
            if let Some(token) = grace_wait {
                let hub = Arc::clone(self);
                let user_id = user_id.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    hub.grace_over(&user_id, token);
                });
            }
            self.dispatch(outbox);
        }
    }

    fn grace_over(&self, user_id: &str, token: u64) {
        let now = Utc::now();
        let mut outbox = Outbox::default();
        {
            let mut st = self.lock();
            let Some(entry) = st.users.get_mut(user_id) else {
                return;
            };
            if entry.presence.grace != Some(token) {
                return;
            }
            entry.presence.grace = None;
            self.settle_presence(&mut st, user_id, now, &mut outbox);
            self.dispatch(outbox);
        }
    }

    /// A client `health.check`: refreshes `last_active` and answers with a `health.check` carrying `me`.
    pub fn health_check(&self, handle: &Arc<ConnHandle>) {
        let now = Utc::now();
        let reply = {
            let mut st = self.lock();
            let Some(entry) = st.users.get_mut(&handle.user_id) else {
                return;
            };
            entry.rec.last_active = Some(now);
            self.db
                .send(DbOp::TouchLastActive(handle.user_id.clone(), now));
            let mut reply = event(event_type::HEALTH_CHECK, now);
            reply.connection_id = Some(handle.id.to_string());
            reply.cid = Some("*".to_string());
            reply.me = Some(entry.rec.own_view(true));
            frame(&reply)
        };
        handle.deliver(reply, &self.metrics);
    }

    /// Closes every connection for shutdown, stamping `last_active` of everyone connected.
    pub fn shutdown(&self) {
        let now = Utc::now();
        let st = self.lock();
        for entry in st.users.values() {
            if !entry.presence.conns.is_empty() {
                self.db
                    .send(DbOp::TouchLastActive(entry.rec.id.clone(), now));
            }
        }
        for conn in st.conns.values() {
            conn.handle.evict(close_code::GOING_AWAY);
        }
    }

    /// Brings the announced presence of a user in line with their state; emits `user.presence.changed` on a
    /// real flip. Returns whether it flipped.
    fn settle_presence(
        &self,
        st: &mut State,
        user_id: &str,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) -> bool {
        let Some(entry) = st.users.get_mut(user_id) else {
            return false;
        };
        let visible = entry.visible_online();
        if visible == entry.presence.announced {
            return false;
        }
        entry.presence.announced = visible;
        let delta = if visible { 1 } else { -1 };
        self.metrics
            .online_users
            .fetch_add(delta, Ordering::Relaxed);
        self.user_event(st, user_id, event_type::USER_PRESENCE_CHANGED, now, outbox);
        true
    }

    /// Sends a user-level event about `user_id` to their own connections (own view) and to every connection
    /// following their presence (public view), once per connection. `user.updated` about an invisible user
    /// goes to their own connections only.
    fn user_event(
        &self,
        st: &State,
        user_id: &str,
        kind: &str,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) {
        let Some(entry) = st.users.get(user_id) else {
            return;
        };
        let own: HashSet<&ConnId> = entry.presence.conns.iter().collect();
        let mut audience: HashSet<&ConnId> = HashSet::new();
        if let Some(followers) = st.followers.get(user_id) {
            audience.extend(followers.iter());
        }
        for cid in st.member_of.get(user_id).into_iter().flatten() {
            if let Some(ch) = st.channels.get(cid) {
                audience.extend(
                    ch.watchers
                        .iter()
                        .filter(|(_, presence)| **presence || self.config.watch_implies_presence)
                        .map(|(c, _)| c),
                );
            }
        }
        audience.retain(|c| !own.contains(c));
        if kind == event_type::USER_UPDATED && entry.rec.invisible {
            // A live update would tell others that an invisible user is active right now: while invisible,
            // updates reach only the user's own connections (others read the new fields from queries, or from
            // the presence event when the user becomes visible again).
            audience.clear();
        }
        if !audience.is_empty() {
            let mut ev = event(kind, now);
            ev.user = Some(entry.rec.public_view(entry.visible_online()));
            let public = frame(&ev);
            for c in audience {
                if let Some(conn) = st.conns.get(c) {
                    outbox.push(&conn.handle, &public);
                }
            }
        }
        if !own.is_empty() {
            let mut ev = event(kind, now);
            ev.user = Some(entry.rec.own_view(entry.connected()));
            let mine = frame(&ev);
            for c in own {
                if let Some(conn) = st.conns.get(c) {
                    outbox.push(&conn.handle, &mine);
                }
            }
        }
    }

    // ----- users -----

    /// `POST /users`: create or replace users.
    pub async fn upsert_users(
        &self,
        caller: &Caller,
        users: &BTreeMap<String, JsonMap>,
    ) -> Result<BTreeMap<String, User>, Failure> {
        const OP: &str = "UpdateUsers";
        let source = source_of(caller);
        check_batch(users.len()).map_err(|e| e.in_operation(OP))?;
        for (id, obj) in users {
            if let Some(given) = obj.get("id") {
                if given.as_str() != Some(id.as_str()) {
                    return Err(
                        Failure::input(format!("users[{id}].id does not match its key"))
                            .in_operation(OP),
                    );
                }
            }
            if id.is_empty() {
                return Err(Failure::input("user id must not be empty").in_operation(OP));
            }
            permit_write(caller, id)?;
            for (field, value) in obj {
                if field != "id" {
                    fields::check_field(id, field, Some(value), source)
                        .map_err(|e| e.in_operation(OP))?;
                }
            }
        }
        let now = Utc::now();
        let mut outbox = Outbox::default();
        let mut result = BTreeMap::new();
        {
            let mut st = self.lock();
            for (id, obj) in users {
                let entry = st
                    .users
                    .entry(id.clone())
                    .or_insert_with(|| UserEntry::new(UserRecord::new(id, now)));
                fields::replace_fields(&mut entry.rec, obj, source);
                let invisible = fields::requested_invisible(obj);
                self.finish_user_write(&mut st, id, invisible, now, &mut outbox, &mut result);
            }
            self.dispatch(outbox);
        }
        self.flush().await.map_err(|e| e.in_operation(OP))?;
        Ok(result)
    }

    /// `PATCH /users`: set and unset fields of existing users.
    pub async fn partial_update_users(
        &self,
        caller: &Caller,
        updates: &[PartialUserUpdate],
    ) -> Result<BTreeMap<String, User>, Failure> {
        const OP: &str = "UpdateUsersPartial";
        let source = source_of(caller);
        check_batch(updates.len()).map_err(|e| e.in_operation(OP))?;
        for u in updates {
            permit_write(caller, &u.id)?;
            for (field, value) in &u.set {
                if field == "id" {
                    return Err(Failure::input(format!("users[{}].id cannot be set", u.id))
                        .in_operation(OP));
                }
                fields::check_field(&u.id, field, Some(value), source)
                    .map_err(|e| e.in_operation(OP))?;
            }
            for field in &u.unset {
                if field == "id" {
                    return Err(
                        Failure::input(format!("users[{}].id cannot be unset", u.id))
                            .in_operation(OP),
                    );
                }
                fields::check_field(&u.id, field, None, source).map_err(|e| e.in_operation(OP))?;
            }
        }
        let now = Utc::now();
        let mut outbox = Outbox::default();
        let mut result = BTreeMap::new();
        {
            let mut st = self.lock();
            if let Some(missing) = updates.iter().find(|u| !st.users.contains_key(&u.id)) {
                return Err(
                    Failure::not_found(format!("user {} does not exist", missing.id))
                        .in_operation(OP),
                );
            }
            for u in updates {
                let Some(entry) = st.users.get_mut(&u.id) else {
                    continue;
                };
                for field in &u.unset {
                    fields::unset_field(&mut entry.rec, field);
                }
                for (field, value) in &u.set {
                    fields::set_field(&mut entry.rec, field, value, source);
                }
                let invisible = match fields::requested_invisible(&u.set) {
                    Some(v) => Some(v),
                    None if u.unset.iter().any(|f| f == "invisible") => Some(false),
                    None => None,
                };
                self.finish_user_write(&mut st, &u.id, invisible, now, &mut outbox, &mut result);
            }
            self.dispatch(outbox);
        }
        self.flush().await.map_err(|e| e.in_operation(OP))?;
        Ok(result)
    }

    /// After a user's fields were written: applies invisibility, persists, and tells everyone concerned.
    fn finish_user_write(
        &self,
        st: &mut State,
        user_id: &str,
        invisible: Option<bool>,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
        result: &mut BTreeMap<String, User>,
    ) {
        let Some(entry) = st.users.get_mut(user_id) else {
            return;
        };
        let invisible_changed = match invisible {
            Some(v) if v != entry.rec.invisible => {
                let connected = entry.connected();
                set_invisible(&mut entry.rec, v, connected, now);
                true
            }
            _ => false,
        };
        entry.rec.updated_at = now;
        self.save_user(&entry.rec);
        result.insert(user_id.to_string(), entry.rec.own_view(entry.connected()));
        self.user_event(st, user_id, event_type::USER_UPDATED, now, outbox);
        self.settle_presence(st, user_id, now, outbox);
        if invisible_changed {
            self.watching_visibility_changed(st, user_id, now, outbox);
        }
    }

    /// `GET /users`: filter, sort and page users; with `presence` the connection follows each user returned.
    pub fn query_users(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Failure> {
        const OP: &str = "QueryUsers";
        let filter =
            Filter::parse(&payload.filter_conditions, None).map_err(|e| e.in_operation(OP))?;
        filter::check_sort(&payload.sort, None).map_err(|e| e.in_operation(OP))?;
        let (limit, offset) =
            page_bounds(payload.limit, payload.offset, 30, 100).map_err(|e| e.in_operation(OP))?;
        let viewer = caller_user(caller);
        let mut sort = payload.sort.clone();
        sort.extend(default_sort(if payload.sort.is_empty() {
            USER_SORT_DEFAULT
        } else {
            &[("id", 1)]
        }));
        let mut st = self.lock();
        // A filter that pins `id` (the usual presence query) only needs those users looked at.
        let candidates: Box<dyn Iterator<Item = &UserEntry>> = match filter.id_candidates() {
            Some(ids) => Box::new(ids.into_iter().filter_map(|id| st.users.get(id))),
            None => Box::new(st.users.values()),
        };
        let mut matched: Vec<(JsonMap, &UserEntry)> = candidates
            .filter_map(|entry| {
                let view = entry.view_for(viewer);
                let map = match serde_json::to_value(&view) {
                    Ok(Value::Object(map)) => map,
                    _ => return None,
                };
                filter.matches(&map).then_some((map, entry))
            })
            .collect();
        matched.sort_by(|a, b| filter::sort_order(&sort, &a.0, &b.0));
        let users: Vec<User> = matched
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, entry)| entry.view_for(viewer))
            .collect();
        if payload.presence {
            if let Some(conn_id) = self.subscribable_conn(&st, caller, conn_id) {
                let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
                if let Some(conn) = st.conns.get_mut(&conn_id) {
                    conn.followed_users.extend(ids.iter().cloned());
                }
                for id in ids {
                    st.followers
                        .entry(id)
                        .or_default()
                        .insert(Arc::clone(&conn_id));
                }
            }
        }
        Ok(users)
    }

    /// The connection a REST call may subscribe: open, and the caller's own unless the caller is the server.
    /// Anything else subscribes nothing (a call racing a reconnect is answered normally).
    fn subscribable_conn(
        &self,
        st: &State,
        caller: &Caller,
        conn_id: Option<&str>,
    ) -> Option<ConnId> {
        let conn = st.conns.get(conn_id?)?;
        match caller {
            Caller::Server => Some(Arc::clone(&conn.handle.id)),
            Caller::User(id) if *id == conn.handle.user_id => Some(Arc::clone(&conn.handle.id)),
            Caller::User(_) => None,
        }
    }

    // ----- channels -----

    /// `POST /channels/{type}/{id}/query` (or without id: the distinct channel of `data.members`).
    pub async fn query_channel(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        channel_type: &str,
        channel_id: Option<&str>,
        req: &ChannelQueryRequest,
    ) -> Result<ChannelStateResponse, Failure> {
        const OP: &str = "GetOrCreateChannel";
        let fail = |f: Failure| f.in_operation(OP);
        if !channel_name_ok(channel_type, false) {
            return Err(fail(Failure::input(
                "channel type may only contain letters, digits, _ and -",
            )));
        }
        let members = member_ids(&req.data).map_err(fail)?;
        let channel_id = match channel_id {
            Some(id) if channel_name_ok(id, true) => id.to_string(),
            Some(_) => {
                return Err(fail(Failure::input(
                    "channel id may only contain letters, digits, !, _ and -",
                )))
            }
            None if members.is_empty() => {
                return Err(fail(Failure::input(
                    "a channel without id needs data.members",
                )))
            }
            None => distinct_channel_id(&members),
        };
        let cid = format!("{channel_type}:{channel_id}");
        let now = Utc::now();
        let mut outbox = Outbox::default();
        let response = {
            let mut st = self.lock();
            if !st.channels.contains_key(&cid) {
                let missing: Vec<&str> = members
                    .iter()
                    .filter(|m| !st.users.contains_key(*m))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(fail(Failure::input(format!(
                        "the following users are specified in channel.members but don't exist: {}",
                        missing.join(", ")
                    ))));
                }
                let mut data = req.data.clone();
                for reserved in [
                    "members",
                    "created_by",
                    "created_by_id",
                    "cid",
                    "id",
                    "type",
                ] {
                    data.remove(reserved);
                }
                let rec = ChannelRecord {
                    cid: cid.clone(),
                    channel_type: channel_type.to_string(),
                    id: channel_id.clone(),
                    data,
                    created_by: caller_user(caller).map(str::to_string),
                    created_at: now,
                    updated_at: now,
                    members: members
                        .iter()
                        .map(|m| MemberRecord {
                            user_id: m.clone(),
                            channel_role: "channel_member".to_string(),
                            created_at: now,
                            updated_at: now,
                        })
                        .collect(),
                };
                self.db.send(DbOp::SaveChannel(Box::new(rec.clone())));
                for m in &members {
                    st.member_of
                        .entry(m.clone())
                        .or_default()
                        .insert(cid.clone());
                }
                st.channels.insert(
                    cid.clone(),
                    ChannelEntry {
                        rec,
                        watchers: HashMap::new(),
                    },
                );
            }
            if req.watch {
                if let Some(conn) = self.subscribable_conn(&st, caller, conn_id) {
                    self.watch(&mut st, &cid, &conn, req.presence, now, &mut outbox);
                }
            }
            self.dispatch(outbox);
            self.channel_state(&st, &cid, caller_user(caller), req.members, req.watchers)
        };
        self.flush().await.map_err(fail)?;
        response.ok_or_else(|| fail(Failure::internal("channel vanished")))
    }

    /// `POST /channels`: filter, sort and page channels; watch them (and their members' presence) if asked.
    pub fn query_channels(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        req: &QueryChannelsRequest,
    ) -> Result<Vec<ChannelStateResponse>, Failure> {
        const OP: &str = "QueryChannels";
        let fail = |f: Failure| f.in_operation(OP);
        let filter = Filter::parse(&req.filter_conditions, None).map_err(fail)?;
        filter::check_sort(&req.sort, None).map_err(fail)?;
        let (limit, offset) = page_bounds(req.limit, req.offset, 10, 30).map_err(fail)?;
        let member_limit = match req.member_limit {
            Some(n) if n > 100 => {
                return Err(fail(Failure::input("member_limit must be at most 100")))
            }
            n => n,
        };
        let mut sort = req.sort.clone();
        sort.extend(default_sort(CHANNEL_SORT_DEFAULT));
        let now = Utc::now();
        let mut outbox = Outbox::default();
        let states = {
            let mut st = self.lock();
            let mut matched: Vec<(JsonMap, String)> = st
                .channels
                .values()
                .map(|ch| (channel_filter_view(&ch.rec), ch.rec.cid.clone()))
                .filter(|(view, _)| filter.matches(view))
                .collect();
            matched.sort_by(|a, b| filter::sort_order(&sort, &a.0, &b.0));
            let cids: Vec<String> = matched
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|(_, cid)| cid)
                .collect();
            if req.watch {
                if let Some(conn) = self.subscribable_conn(&st, caller, conn_id) {
                    for cid in &cids {
                        self.watch(&mut st, cid, &conn, req.presence, now, &mut outbox);
                    }
                }
            }
            self.dispatch(outbox);
            let members = presence_protocol::Pagination {
                limit: member_limit,
                offset: None,
            };
            cids.iter()
                .filter_map(|cid| {
                    self.channel_state(&st, cid, caller_user(caller), Some(members), None)
                })
                .map(|mut state| {
                    state.duration = None;
                    state
                })
                .collect()
        };
        Ok(states)
    }

    /// `POST /channels/{type}/{id}/stop-watching`.
    pub fn stop_watching(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        cid: &str,
    ) -> Result<(), Failure> {
        let now = Utc::now();
        let mut outbox = Outbox::default();
        {
            let mut st = self.lock();
            if !st.channels.contains_key(cid) {
                return Err(Failure::not_found(format!("channel {cid} does not exist"))
                    .in_operation("StopWatchingChannel"));
            }
            if let Some(conn) = self.subscribable_conn(&st, caller, conn_id) {
                if let Some(entry) = st.conns.get_mut(&conn) {
                    entry.watching.remove(cid);
                }
                let user_id = st.conns.get(&conn).map(|c| c.handle.user_id.clone());
                if let Some(user_id) = user_id {
                    self.unwatch(&mut st, cid, &conn, &user_id, now, &mut outbox);
                }
            }
            self.dispatch(outbox);
        }
        Ok(())
    }

    fn watch(
        &self,
        st: &mut State,
        cid: &str,
        conn: &ConnId,
        presence: bool,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) {
        let Some(user_id) = st.conns.get(conn).map(|c| c.handle.user_id.clone()) else {
            return;
        };
        let first_of_user = !self.user_watches(st, cid, &user_id);
        let Some(ch) = st.channels.get_mut(cid) else {
            return;
        };
        let was = ch.watchers.insert(Arc::clone(conn), presence);
        // A repeated watch keeps an earlier presence request.
        if was == Some(true) {
            ch.watchers.insert(Arc::clone(conn), true);
        }
        if let Some(entry) = st.conns.get_mut(conn) {
            entry.watching.insert(cid.to_string());
        }
        if first_of_user && self.is_visible(st, &user_id) {
            self.watching_event(
                st,
                cid,
                &user_id,
                event_type::USER_WATCHING_START,
                Some(conn),
                now,
                outbox,
            );
        }
    }

    fn unwatch(
        &self,
        st: &mut State,
        cid: &str,
        conn: &ConnId,
        user_id: &str,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) {
        let Some(ch) = st.channels.get_mut(cid) else {
            return;
        };
        if ch.watchers.remove(conn).is_none() {
            return;
        }
        if !self.user_watches(st, cid, user_id) && self.is_visible(st, user_id) {
            self.watching_event(
                st,
                cid,
                user_id,
                event_type::USER_WATCHING_STOP,
                None,
                now,
                outbox,
            );
        }
    }

    /// Whether any connection of the user watches the channel.
    fn user_watches(&self, st: &State, cid: &str, user_id: &str) -> bool {
        st.channels.get(cid).is_some_and(|ch| {
            ch.watchers
                .keys()
                .any(|c| st.conns.get(c).is_some_and(|e| e.handle.user_id == user_id))
        })
    }

    fn is_visible(&self, st: &State, user_id: &str) -> bool {
        st.users.get(user_id).is_some_and(|u| !u.rec.invisible)
    }

    /// Distinct visible users watching a channel.
    fn watching_users<'a>(&self, st: &'a State, cid: &str) -> Vec<&'a UserEntry> {
        let Some(ch) = st.channels.get(cid) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for c in ch.watchers.keys() {
            let Some(conn) = st.conns.get(c) else {
                continue;
            };
            let uid = conn.handle.user_id.as_str();
            if let Some(entry) = st.users.get(uid) {
                if !entry.rec.invisible && seen.insert(uid) {
                    users.push(entry);
                }
            }
        }
        users.sort_by(|a, b| a.rec.id.cmp(&b.rec.id));
        users
    }

    #[allow(clippy::too_many_arguments)]
    fn watching_event(
        &self,
        st: &State,
        cid: &str,
        user_id: &str,
        kind: &str,
        except: Option<&ConnId>,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) {
        let (Some(ch), Some(user)) = (st.channels.get(cid), st.users.get(user_id)) else {
            return;
        };
        let mut ev = event(kind, now);
        ev.cid = Some(cid.to_string());
        ev.channel_id = Some(ch.rec.id.clone());
        ev.channel_type = Some(ch.rec.channel_type.clone());
        ev.user = Some(user.rec.public_view(user.visible_online()));
        ev.watcher_count = Some(self.watching_users(st, cid).len() as u64);
        let f = frame(&ev);
        for c in ch.watchers.keys() {
            if Some(c) == except {
                continue;
            }
            if let Some(conn) = st.conns.get(c) {
                outbox.push(&conn.handle, &f);
            }
        }
    }

    /// A user became invisible (or visible again): to other watchers they stop (or start) watching.
    fn watching_visibility_changed(
        &self,
        st: &State,
        user_id: &str,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) {
        let Some(entry) = st.users.get(user_id) else {
            return;
        };
        let kind = if entry.rec.invisible {
            event_type::USER_WATCHING_STOP
        } else {
            event_type::USER_WATCHING_START
        };
        let mut cids: Vec<&String> = entry
            .presence
            .conns
            .iter()
            .filter_map(|c| st.conns.get(c))
            .flat_map(|c| c.watching.iter())
            .collect();
        cids.sort();
        cids.dedup();
        for cid in cids {
            self.watching_event(st, cid, user_id, kind, None, now, outbox);
        }
    }

    fn channel_state(
        &self,
        st: &State,
        cid: &str,
        viewer: Option<&str>,
        members: Option<presence_protocol::Pagination>,
        watchers: Option<presence_protocol::Pagination>,
    ) -> Option<ChannelStateResponse> {
        let ch = st.channels.get(cid)?;
        let member_view = |m: &MemberRecord| -> Option<ChannelMember> {
            let user = st.users.get(&m.user_id)?.view_for(viewer);
            Some(ChannelMember {
                user_id: m.user_id.clone(),
                user,
                channel_role: m.channel_role.clone(),
                created_at: record_time(m.created_at),
                updated_at: record_time(m.updated_at),
                banned: false,
                shadow_banned: false,
                notifications_muted: false,
            })
        };
        let (m_limit, m_offset) = members
            .map(|p| (p.limit.unwrap_or(100).min(100), p.offset.unwrap_or(0)))
            .unwrap_or((100, 0));
        let member_list: Vec<ChannelMember> = ch
            .rec
            .members
            .iter()
            .skip(m_offset as usize)
            .take(m_limit as usize)
            .filter_map(member_view)
            .collect();
        let membership = viewer
            .and_then(|v| ch.rec.members.iter().find(|m| m.user_id == v))
            .and_then(member_view);
        let watching = self.watching_users(st, cid);
        let watcher_count = watching.len() as u64;
        let watcher_list = watchers.map(|p| {
            watching
                .iter()
                .skip(p.offset.unwrap_or(0) as usize)
                .take(p.limit.unwrap_or(100) as usize)
                .map(|u| u.view_for(viewer))
                .collect()
        });
        let created_by = ch
            .rec
            .created_by
            .as_ref()
            .and_then(|id| st.users.get(id))
            .map(|u| u.view_for(viewer));
        Some(ChannelStateResponse {
            channel: ChannelResponse {
                id: ch.rec.id.clone(),
                channel_type: ch.rec.channel_type.clone(),
                cid: ch.rec.cid.clone(),
                created_at: record_time(ch.rec.created_at),
                updated_at: record_time(ch.rec.updated_at),
                created_by,
                frozen: false,
                disabled: false,
                member_count: ch.rec.members.len() as u64,
                config: ChannelConfig {
                    connect_events: true,
                    name: ch.rec.channel_type.clone(),
                },
                own_capabilities: vec!["read-events".to_string(), "connect-events".to_string()],
                custom: ch.rec.data.clone(),
            },
            members: member_list,
            messages: Vec::new(),
            pinned_messages: Vec::new(),
            threads: Vec::new(),
            read: Vec::new(),
            watchers: watcher_list,
            watcher_count,
            membership,
            duration: Some(String::new()),
        })
    }
}

/// What a channel looks like to a filter: its ids, members, counts, times and custom data.
fn channel_filter_view(rec: &ChannelRecord) -> JsonMap {
    let mut view = rec.data.clone();
    let members: Vec<Value> = rec
        .members
        .iter()
        .map(|m| Value::String(m.user_id.clone()))
        .collect();
    view.insert("cid".into(), rec.cid.clone().into());
    view.insert("id".into(), rec.id.clone().into());
    view.insert("type".into(), rec.channel_type.clone().into());
    view.insert("member_count".into(), (rec.members.len() as u64).into());
    view.insert("members".into(), Value::Array(members));
    view.insert("created_at".into(), record_time(rec.created_at).into());
    view.insert("updated_at".into(), record_time(rec.updated_at).into());
    if let Some(by) = &rec.created_by {
        view.insert("created_by_id".into(), by.clone().into());
    }
    view
}

/// Turns invisibility on or off. Others keep seeing the `last_active` of the moment it began.
fn set_invisible(rec: &mut UserRecord, invisible: bool, connected: bool, now: DateTime<Utc>) {
    rec.invisible = invisible;
    if invisible {
        if connected {
            rec.last_active = Some(now);
        }
        rec.frozen_last_active = rec.last_active;
    } else {
        rec.frozen_last_active = None;
    }
}

/// A user write names between 1 and 100 users.
fn check_batch(len: usize) -> Result<(), Failure> {
    match len {
        0 => Err(Failure::input("users must not be empty")),
        1..=100 => Ok(()),
        _ => Err(Failure::input("at most 100 users per request")),
    }
}

fn source_of(caller: &Caller) -> WriteSource {
    match caller {
        Caller::Server => WriteSource::Server,
        Caller::User(_) => WriteSource::User,
    }
}

fn caller_user(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Server => None,
        Caller::User(id) => Some(id),
    }
}

fn permit_write(caller: &Caller, user_id: &str) -> Result<(), Failure> {
    match caller {
        Caller::User(id) if id != user_id => Err(Failure::not_allowed(format!(
            "user {id} may not update user {user_id}"
        ))),
        _ => Ok(()),
    }
}
