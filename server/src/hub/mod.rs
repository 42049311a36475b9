//! The driver around the presence engine. One thread (the [`actor`]) owns the engine and the store and runs
//! operations in batches: nothing an operation did is visible — no event, no answer, no read — before its
//! writes are committed. Callers queue an operation and wait for its answer. Queries filter, sort and serialize
//! on the read view the thread publishes after each batch, on tokio's blocking pool; only subscribing the
//! caller's connection to the page they return goes through the thread.
//!
//! In cluster mode every state-changing operation becomes a [`command::Command`] appended to the cluster log
//! instead: the thread applies the log's entries in order, and an operation is answered when this node applies
//! its own entry. Health checks stay local (they only refresh `last_active`). Queries first wait until this
//! node has applied what the log held when they arrived, so they see every write acknowledged anywhere.

mod actor;
pub(crate) mod command;
mod fair;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use presence_protocol::codes::close_code;
use presence_protocol::{
    ChannelQueryRequest, ChannelStateResponse, JsonMap, PartialUserUpdate, QueryChannelsRequest,
    QueryUsersPayload, User,
};
use tokio::sync::oneshot;

use self::actor::{Actor, Fact, Job, Op, Probe, Reply, StoreState, ViewSlot};
use self::command::{conn_prefix, Command, Outcome};
use self::fair::QuerySlots;
use crate::bus::{Bus, Outlet};
use crate::cluster::{lock, LogItem, Node};
use crate::error::Error;
use crate::model::Caller;
use crate::presence::{self, ConnId, Ending, Engine, View};
use crate::store::{Snapshot, Store, StoreError};

/// Counters exported at `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub open_connections: usize,
    pub online_users: usize,
    pub frames_sent: u64,
    pub commits: u64,
    pub writes_committed: u64,
}

pub struct Hub {
    ops: mpsc::Sender<Op>,
    view: ViewSlot,
    bus: Arc<dyn Bus>,
    /// Commits so far, and whether the database works (kept by the thread).
    store_state: StoreState,
    /// Unpinned queries are CPU-bound: at most one fewer at a time than there are cores, so the hub thread and
    /// the sockets always keep a core (pings are answered while queries queue), handed out fairly by caller.
    query_slots: Arc<QuerySlots>,
    /// Cluster mode: this process in the cluster.
    node: Option<Arc<Node>>,
}

/// How long one query may examine candidates before it is refused as too expensive: about 20 plain unpinned
/// queries over 20,000 users (23 ms each, release build on 2 cores), so no request costs much more than that
/// whatever its filter. Time rather than a count of candidates, because what a candidate costs depends on the
/// data (a `$q` over a 5 KB field) as much as on the filter.
const QUERY_BUDGET: Duration = Duration::from_millis(500);

/// Tells a query still running that its request was dropped (the client hung up), so it stops at its next check.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The name a caller's queries wait under for a slot.
fn caller_line(caller: &Caller) -> &str {
    match caller {
        Caller::Server => "",
        Caller::User(id) => id,
    }
}

/// How many view queries may run at once: one fewer than the cores, at least one.
fn query_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// The answer to a request whose batch could not be committed.
fn store_failure(e: &StoreError, operation: &str) -> Error {
    Error::internal(format!("database write failed, nothing was changed: {e}"))
        .in_operation(operation)
}

fn hub_gone(operation: &str) -> Error {
    Error::internal("the server is shutting down").in_operation(operation)
}

fn mismatch(operation: &str) -> Error {
    Error::internal("unexpected outcome").in_operation(operation)
}

impl Outcome {
    /// The outcome, or the error the operation ended with.
    fn checked(self) -> Result<Outcome, Error> {
        match self {
            Outcome::Connected(Err(e))
            | Outcome::Users(Err(e))
            | Outcome::Channel(Err(e))
            | Outcome::Done(Err(e)) => Err(e),
            ok => Ok(ok),
        }
    }
}

impl Hub {
    /// A hub over `snapshot`, with its thread running; in cluster mode (`node`), the thread also applies the
    /// cluster log once [`Node::start`] runs.
    pub fn start(
        config: presence::Config,
        snapshot: Snapshot,
        store: Box<dyn Store>,
        bus: Arc<dyn Bus>,
        node: Option<Arc<Node>>,
    ) -> Result<Arc<Hub>, StoreError> {
        let engine = Engine::new(config, snapshot.users, snapshot.channels);
        let view: ViewSlot = Arc::new(RwLock::new(Arc::new(engine.view())));
        let store_state = StoreState::default();
        let (tx, rx) = mpsc::channel();
        Actor::new(
            engine,
            store,
            Arc::clone(&bus),
            Arc::clone(&view),
            store_state.clone(),
            node.clone(),
        )
        .spawn(rx)
        .map_err(|e| StoreError::Open(Arc::new(e)))?;
        Ok(Arc::new(Hub {
            ops: tx,
            view,
            bus,
            store_state,
            query_slots: QuerySlots::new(query_parallelism()),
            node,
        }))
    }

    /// Cluster mode: where the log's entries go (the hub's thread).
    pub fn log_sink(&self) -> crate::cluster::Sink {
        let ops = self.ops.clone();
        Arc::new(move |item: LogItem| {
            let _ = ops.send(Op::Entry(Box::new(item)));
        })
    }

    /// Runs `command`: through the cluster log in cluster mode, otherwise on the thread like any request.
    async fn run(&self, operation: &'static str, command: Command) -> Result<Outcome, Error> {
        let Some(node) = &self.node else {
            let bus = Arc::clone(&self.bus);
            return self
                .request(operation, move |engine, now| {
                    command.apply(engine, &*bus, now).checked()
                })
                .await;
        };
        let command = self.dry_run(operation, command).await?;
        let (tx, rx) = oneshot::channel();
        node.submit(
            command,
            Box::new(move |outcome, failure| {
                let _ = tx.send((outcome, failure.cloned()));
            }),
        )
        .await
        .map_err(|e| e.in_operation(operation))?;
        let (outcome, failure) = rx.await.map_err(|_| hub_gone(operation))?;
        let outcome = outcome.checked()?;
        match failure {
            // Every node applied the entry, but what this node had to store of it is not stored. (Writes that
            // failed because the database is down are committed once it is back.)
            Some(e) if e.is_refusal() => Err(store_failure(&e, operation)),
            _ => Ok(outcome),
        }
    }

    /// Cluster mode: tries `command` on a copy of this node's engine first, so a request the engine refuses
    /// (not allowed, too large, malformed) is answered here and leaves nothing in the log every node reads and
    /// Redis keeps. A refusal counts only once this node has applied what the log held when it was refused (it
    /// may lack a write acknowledged by another node a moment ago); the entry, once appended, still decides.
    async fn dry_run(&self, operation: &'static str, command: Command) -> Result<Command, Error> {
        if !command.is_request() {
            return Ok(command);
        }
        let (command, verdict) = self.probe(operation, command).await?;
        if verdict.is_ok() {
            return Ok(command);
        }
        self.catch_up().await;
        let (command, verdict) = self.probe(operation, command).await?;
        verdict.map(|()| command)
    }

    /// What applying `command` to a copy of the engine as it is now gives.
    async fn probe(
        &self,
        operation: &'static str,
        command: Command,
    ) -> Result<(Command, Result<(), Error>), Error> {
        let (tx, rx) = oneshot::channel();
        let probe: Probe = Box::new(move |engine, now| {
            let verdict = command.dry_run(engine, now);
            let _ = tx.send((command, verdict));
        });
        if self.ops.send(Op::Probe(probe)).is_err() {
            return Err(hub_gone(operation));
        }
        rx.await.map_err(|_| hub_gone(operation))
    }

    /// In cluster mode, waits until this node has applied every write acknowledged anywhere so far.
    async fn catch_up(&self) {
        if let Some(node) = &self.node {
            node.catch_up().await;
        }
    }

    /// Runs `query` on a blocking thread, once `caller` has its turn for a query slot unless it is `cheap`. The
    /// query is told to stop (`spent`) once it has run for [`QUERY_BUDGET`] or its request was dropped; a request
    /// dropped while waiting leaves the line.
    async fn on_view<R: Send + 'static>(
        &self,
        operation: &str,
        caller: &Caller,
        cheap: bool,
        query: impl FnOnce(Arc<View>, presence::Spent<'_>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let failed = || Error::internal("the query failed").in_operation(operation);
        let slot = if cheap {
            None
        } else {
            let line = caller_line(caller);
            Some(
                self.query_slots
                    .acquire(line)
                    .await
                    .map_err(|e| e.in_operation(operation))?,
            )
        };
        let abandoned = Abandon(Arc::new(AtomicBool::new(false)));
        let stop = Arc::clone(&abandoned.0);
        // The view is taken once the slot is ours, so a query that waited still reads the latest state.
        let view = self.view();
        let answer = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + QUERY_BUDGET;
            let spent = || stop.load(Ordering::Relaxed) || Instant::now() >= deadline;
            let answer = query(view, &spent);
            drop(slot);
            answer
        })
        .await
        .map_err(|_| failed())?;
        drop(abandoned);
        Ok(answer)
    }

    /// The users and channels as of the last committed batch.
    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn fact(&self, fact: Fact) {
        // The thread only stops once the hub is gone.
        let _ = self.ops.send(Op::Fact(fact));
    }

    /// Runs `op` on the engine and answers once its writes are durable; a failed commit answers with a
    /// database error in `operation`'s name (an error of the operation itself is answered as it is).
    async fn request<R: Send + 'static>(
        &self,
        operation: &'static str,
        mut op: impl FnMut(&mut Engine, DateTime<Utc>) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let job: Job = Box::new(move |engine, now| {
            let result = op(engine, now);
            let tx = Arc::clone(&tx);
            Box::new(move |failure: Option<&StoreError>| {
                let answer = match failure {
                    Some(e) if result.is_ok() => Err(store_failure(e, operation)),
                    _ => result,
                };
                if let Some(tx) = lock(&tx).take() {
                    let _ = tx.send(answer);
                }
            })
        });
        if self.ops.send(Op::Request(job)).is_err() {
            return Err(hub_gone(operation));
        }
        rx.await.unwrap_or_else(|_| Err(hub_gone(operation)))
    }

    /// Waits until every write so far is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.request("Flush", |_, _| Ok(())).await
    }

    pub fn counts(&self) -> Counts {
        let view = self.view();
        Counts {
            open_connections: view.open_connections(),
            online_users: view.online_users(),
            frames_sent: self.bus.frames_sent(),
            commits: self.store_state.commits.load(Ordering::Relaxed),
            writes_committed: self.store_state.writes_committed.load(Ordering::Relaxed),
        }
    }

    /// The parts the server needs that do not work now, for `/healthz`: `database` while the last commit
    /// failed for want of a working database (until one succeeds), `redis` in cluster mode while the last
    /// exchange with Redis failed.
    pub fn failing_parts(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if self.store_state.failing.load(Ordering::Relaxed) {
            failing.push("database");
        }
        if self
            .node
            .as_ref()
            .is_some_and(|node| !node.redis_reachable())
        {
            failing.push("redis");
        }
        failing
    }

    // ----- connections -----

    /// Registers a new connection for `user_id` that receives its frames through `outlet`, applying `details`
    /// as on connect; its queue starts with the first `health.check`. At the per-user cap, the user's oldest
    /// connection that has missed a pong gives way and is closed with 4002; with none, the connection is
    /// refused (code 71). Answered once the connect is durable.
    pub async fn connect(
        &self,
        user_id: &str,
        details: &JsonMap,
        outlet: Arc<Outlet>,
    ) -> Result<ConnId, Error> {
        const OP: &str = "Connect";
        if let Some(node) = &self.node {
            return self
                .connect_in_cluster(node, user_id, details, outlet)
                .await;
        }
        let id: ConnId = uuid::Uuid::new_v4().to_string().into();
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let (user_id, details) = (user_id.to_string(), details.clone());
        let ops = self.ops.clone();
        let (bus, conn) = (Arc::clone(&self.bus), Arc::clone(&id));
        let job: Job = Box::new(move |engine, now| {
            let dead = bus.missed_pong(engine.connections_at_cap(&user_id));
            bus.attach(Arc::clone(&conn), Arc::clone(&outlet));
            let result = engine.connect(Arc::clone(&conn), &user_id, &details, &dead, now);
            if result.is_err() {
                bus.detach(&conn);
            }
            let (bus, conn, ops, tx) = (
                Arc::clone(&bus),
                Arc::clone(&conn),
                ops.clone(),
                Arc::clone(&tx),
            );
            let reply: Reply = Box::new(move |failure| {
                let answer = match (failure, result) {
                    (_, Err(e)) => Err(e),
                    (Some(e), Ok(_)) => {
                        // The engine was put back: the connection never existed (nor was one replaced).
                        bus.detach(&conn);
                        Err(store_failure(e, OP))
                    }
                    (None, Ok(replaced)) => {
                        if let Some(old) = replaced {
                            bus.evict(&old, close_code::PONG_TIMEOUT);
                        }
                        Ok(())
                    }
                };
                let registered = answer.is_ok();
                let Some(tx) = lock(&tx).take() else {
                    return;
                };
                if tx.send(answer).is_err() && registered {
                    // Nobody serves the socket any more: end the connection again.
                    let _ = ops.send(Op::Fact(Fact::Disconnect(conn, Ending::Abnormal)));
                }
            });
            reply
        });
        if self.ops.send(Op::Request(job)).is_err() {
            return Err(hub_gone(OP));
        }
        rx.await.unwrap_or_else(|_| Err(hub_gone(OP)))?;
        Ok(id)
    }

    /// [`Hub::connect`] through the cluster log: the connection's id names this node, and the user's
    /// connections that may give way are those this node holds that missed a pong.
    async fn connect_in_cluster(
        &self,
        node: &Arc<Node>,
        user_id: &str,
        details: &JsonMap,
        outlet: Arc<Outlet>,
    ) -> Result<ConnId, Error> {
        const OP: &str = "Connect";
        let id: ConnId = format!("{}{}", conn_prefix(node.id()), uuid::Uuid::new_v4()).into();
        let replaceable = self.bus.missed_pong(&self.view().connections_of(user_id));
        // Attached first, so the connection's first frame finds it; nothing reaches it before its entry.
        self.bus.attach(Arc::clone(&id), outlet);
        let command = Command::Connect {
            conn: Arc::clone(&id),
            user_id: user_id.to_string(),
            details: details.clone(),
            replaceable,
        };
        let command = match self.dry_run(OP, command).await {
            Ok(command) => command,
            Err(e) => {
                self.bus.detach(&id);
                return Err(e);
            }
        };
        let (tx, rx) = oneshot::channel();
        let (bus, conn, waiting) = (Arc::clone(&self.bus), Arc::clone(&id), Arc::clone(node));
        let submitted = node
            .submit(
                command,
                Box::new(move |outcome, _| {
                    let registered = matches!(outcome, Outcome::Connected(Ok(_)));
                    if !registered {
                        bus.detach(&conn);
                    }
                    if tx.send(outcome).is_err() && registered {
                        // Nobody serves the socket any more: end the connection again.
                        waiting.submit_fact(Command::Disconnect {
                            conn,
                            ending: Ending::Abnormal,
                        });
                    }
                }),
            )
            .await;
        if let Err(e) = submitted {
            self.bus.detach(&id);
            return Err(e.in_operation(OP));
        }
        match rx.await.map_err(|_| hub_gone(OP))?.checked()? {
            Outcome::Connected(_) => Ok(id),
            _ => Err(mismatch(OP)),
        }
    }

    /// Forgets a connection (see [`Engine::disconnect`]).
    pub fn disconnect(&self, conn: &ConnId, ending: Ending) {
        match &self.node {
            Some(node) => node.submit_fact(Command::Disconnect {
                conn: Arc::clone(conn),
                ending,
            }),
            None => self.fact(Fact::Disconnect(Arc::clone(conn), ending)),
        }
    }

    /// A client `health.check`.
    pub fn health_check(&self, conn: &ConnId) {
        self.fact(Fact::HealthCheck(Arc::clone(conn)));
    }

    /// Closes every connection for shutdown (1001), stamping `last_active` of everyone connected. In cluster
    /// mode this node first leaves the cluster: its connections end on every node (for a second at most
    /// while Redis is away).
    pub fn shutdown(self: &Arc<Self>) {
        let Some(node) = self.node.clone() else {
            self.fact(Fact::Shutdown);
            return;
        };
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let leave = hub.run(
                "Shutdown",
                Command::NodeDown {
                    node: node.id().to_string(),
                },
            );
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), leave).await;
            hub.fact(Fact::Shutdown);
        });
    }

    // ----- REST operations: each answers once its writes are durable -----

    pub async fn upsert_users(
        &self,
        caller: &Caller,
        users: &BTreeMap<String, JsonMap>,
    ) -> Result<BTreeMap<String, User>, Error> {
        const OP: &str = "UpdateUsers";
        let command = Command::UpsertUsers {
            caller: caller.clone(),
            users: users.clone(),
        };
        match self.run(OP, command).await? {
            Outcome::Users(users) => users,
            _ => Err(mismatch(OP)),
        }
    }

    pub async fn partial_update_users(
        &self,
        caller: &Caller,
        updates: &[PartialUserUpdate],
    ) -> Result<BTreeMap<String, User>, Error> {
        const OP: &str = "UpdateUsersPartial";
        let command = Command::PartialUpdateUsers {
            caller: caller.clone(),
            updates: updates.to_vec(),
        };
        match self.run(OP, command).await? {
            Outcome::Users(users) => users,
            _ => Err(mismatch(OP)),
        }
    }

    /// Filters, sorts and pages on the last committed view, off the runtime's workers; with `presence`, the
    /// connection then follows the users returned (and they are returned as they are at that moment).
    pub async fn query_users(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Error> {
        const OP: &str = "QueryUsers";
        let pinned = View::pins_user_ids(&payload.filter_conditions);
        let (who, query) = (caller.clone(), payload.clone());
        self.catch_up().await;
        let users = self
            .on_view(OP, caller, pinned, move |view, spent| {
                view.query_users_within(&who, &query, spent)
            })
            .await??;
        match conn_id {
            Some(conn) if payload.presence => {
                let command = Command::FollowUsers {
                    caller: caller.clone(),
                    conn: conn.to_string(),
                    ids: users.iter().map(|u| u.id.clone()).collect(),
                };
                match self.run(OP, command).await? {
                    Outcome::Followed(followed) => Ok(followed?.unwrap_or(users)),
                    _ => Err(mismatch(OP)),
                }
            }
            _ => Ok(users),
        }
    }

    pub async fn query_channel(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        channel_type: &str,
        channel_id: Option<&str>,
        req: &ChannelQueryRequest,
    ) -> Result<ChannelStateResponse, Error> {
        const OP: &str = "GetOrCreateChannel";
        let command = Command::QueryChannel {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            channel_type: channel_type.to_string(),
            channel_id: channel_id.map(str::to_string),
            req: req.clone(),
        };
        match self.run(OP, command).await? {
            Outcome::Channel(state) => state.map(|s| *s),
            _ => Err(mismatch(OP)),
        }
    }

    /// Filters, sorts and pages on the last committed view, off the runtime's workers; then watches the page
    /// if asked and builds the channel states (with their live watchers) on the engine.
    pub async fn query_channels(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        req: &QueryChannelsRequest,
    ) -> Result<Vec<ChannelStateResponse>, Error> {
        const OP: &str = "QueryChannels";
        // A filter pinning `cid` (a client recovering its channels) looks at those channels only: it never waits.
        let pinned = View::pins_channel_cids(&req.filter_conditions);
        let (who, query) = (caller.clone(), req.clone());
        self.catch_up().await;
        let page = self
            .on_view(OP, caller, pinned, move |view, spent| {
                view.select_channels_within(&who, &query, spent)
            })
            .await??;
        let command = Command::ChannelStates {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            page,
        };
        match self.run(OP, command).await? {
            Outcome::Channels(states) => Ok(states),
            _ => Err(mismatch(OP)),
        }
    }

    pub async fn stop_watching(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        cid: &str,
    ) -> Result<(), Error> {
        const OP: &str = "StopWatchingChannel";
        let command = Command::StopWatching {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            cid: cid.to_string(),
        };
        match self.run(OP, command).await? {
            Outcome::Done(done) => done,
            _ => Err(mismatch(OP)),
        }
    }
}
