//! The driver around the presence engine, with one command path for one process and many. Every
//! state-changing operation is a typed [`Operation`] appended to a [`Log`]; one thread ([`thread`]) owns the
//! engine and the store, applies the log's entries in order (a caller's own entry with its typed result), and
//! settles them in batches ([`driver`]): nothing an entry did is visible — no event, no answer, no read — before
//! its writes are committed. With one process the log is an in-process sequence ([`local::LocalLog`]); in a
//! cluster it is the shared log on Redis, which the driver cannot tell apart except by what the log says of itself
//! (shared entries cannot be undone; requests are tried on a copy of the engine before they are appended).
//!
//! Queries filter, sort and serialize on the read view the thread publishes after each batch, on tokio's blocking
//! pool, after waiting until this process has applied what the log held when they arrived; only subscribing the
//! caller's connection to the page they return is an operation. Health checks stay local (they only refresh
//! `last_active`).

pub mod driver;
#[cfg(test)]
mod driver_tests;
mod fair;
pub mod local;
pub mod log;
#[cfg(test)]
mod nodes_tests;
pub mod pending;
mod sockets;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
mod thread;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use presence_protocol::{
    ChannelQueryRequest, ChannelStateResponse, JsonMap, PartialUserUpdate, QueryChannelsRequest,
    QueryUsersPayload, UpdateChannelRequest, UpdateChannelResponse, User,
};

use self::driver::{Driver, Input, Probe, StoreState};
use self::fair::QuerySlots;
use self::local::LocalLog;
use self::log::{Log, Sink};
use self::pending::Waiting;
pub use self::sockets::Sockets;
use self::thread::{HubThread, ViewSlot};
use crate::error::Error;
use crate::model::AppSettings;
use crate::model::Caller;
use crate::presence::command::Operation;
use crate::presence::command::{
    ChannelStates, Connect, Disconnect, FollowUsers, PartialUpdateUsers, QueryChannel,
    StopWatching, UpdateApp, UpdateMembers, UpsertUsers,
};
use crate::presence::{self, ConnId, Ending, Engine, View};
use crate::store::{Snapshot, Store, StoreError};

/// Counters exported at `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub open_connections: usize,
    pub online_users: usize,
    pub follows: usize,
    pub frames_sent: u64,
    pub commits: u64,
    pub writes_committed: u64,
}

pub struct Hub {
    inputs: mpsc::Sender<Input>,
    log: Arc<dyn Log>,
    view: ViewSlot,
    sockets: Arc<dyn Sockets>,
    /// Commits so far, and whether the database works (kept by the thread).
    store_state: StoreState,
    /// Unpinned queries are CPU-bound: at most one fewer at a time than there are cores, so the hub thread and
    /// the sockets always keep a core (pings are answered while queries queue), handed out fairly by caller.
    query_slots: Arc<QuerySlots>,
}

/// How long one query may examine candidates before it is refused as too expensive: about 20 plain unpinned
/// queries over 20,000 users (23 ms each, release build on 2 cores), so no request costs much more than that
/// whatever its filter. Time rather than a count of candidates, because what a candidate costs depends on the
/// data (a `$q` over a 5 KB field) as much as on the filter.
const QUERY_BUDGET: Duration = Duration::from_millis(500);

/// How long a process that shuts down waits for its farewell to reach the log.
const FAREWELL_BUDGET: Duration = Duration::from_secs(1);

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

fn hub_gone() -> Error {
    Error::internal("the server is shutting down")
}

/// Where the hub's log comes from: the in-process sequence, or a shared log that feeds the hub through the sink
/// it is given (and is started once the hub runs).
pub enum LogChoice {
    Local,
    Shared(Arc<dyn Log>),
}

impl Hub {
    /// A hub over `snapshot`, with its thread running. A shared log starts handing entries to [`Hub::log_sink`]
    /// once it is started.
    pub fn start(
        config: presence::Config,
        snapshot: Snapshot,
        store: Box<dyn Store>,
        sockets: Arc<dyn Sockets>,
        log: LogChoice,
    ) -> Result<Arc<Hub>, StoreError> {
        let mut engine = Engine::new(config, snapshot.users, snapshot.channels);
        engine.restore_app(snapshot.app);
        let view: ViewSlot = Arc::new(RwLock::new(Arc::new(engine.view())));
        let store_state = StoreState::default();
        let (tx, rx) = mpsc::channel();
        let log: Arc<dyn Log> = match log {
            LogChoice::Local => Arc::new(LocalLog::new(sink(&tx))),
            LogChoice::Shared(log) => log,
        };
        let driver = Driver::new(
            engine,
            log.conn_prefix(),
            store.shared(),
            store_state.clone(),
            chrono::Utc::now(),
        );
        HubThread {
            driver,
            store,
            sockets: Arc::clone(&sockets),
            log: Arc::clone(&log),
            view: Arc::clone(&view),
        }
        .spawn(rx)
        .map_err(|e| StoreError::Open(Arc::new(e)))?;
        Ok(Arc::new(Hub {
            inputs: tx,
            log,
            view,
            sockets,
            store_state,
            query_slots: QuerySlots::new(query_parallelism()),
        }))
    }

    /// `PATCH /app`.
    pub async fn update_app(
        &self,
        caller: &Caller,
        webhook_url: Option<String>,
    ) -> Result<AppSettings, Error> {
        self.run(UpdateApp {
            caller: caller.clone(),
            webhook_url,
        })
        .await
    }

    /// The app's settings and where webhook events go now, as of the last committed batch.
    pub fn app(&self) -> (AppSettings, Option<Arc<str>>) {
        let view = self.view();
        (view.app().clone(), view.webhook_url())
    }

    /// Where webhook events go now, as of the last committed batch.
    pub fn webhook_url(&self) -> Option<Arc<str>> {
        self.view().webhook_url()
    }

    /// Webhook events delivered (or given up on): deleted from the outbox in the hub's next commit.
    pub fn webhooks_done(&self, ids: Vec<String>) {
        if !ids.is_empty() {
            let _ = self.inputs.send(Input::WebhooksDone(ids));
        }
    }

    /// Where a shared log hands its entries (the hub's thread).
    pub fn log_sink(&self) -> Sink {
        sink(&self.inputs)
    }

    /// Runs `op` through the log and answers with its typed result once it is applied here and its writes are
    /// durable. An error carries the operation's name.
    async fn run<O: Operation>(&self, op: O) -> Result<O::Output, Error> {
        self.run_unnamed(op)
            .await
            .map_err(|e| e.in_operation(O::NAME))
    }

    async fn run_unnamed<O: Operation>(&self, op: O) -> Result<O::Output, Error> {
        let op = if self.log.shared() {
            self.dry_run(op).await?
        } else {
            op
        };
        let command = op.clone().into();
        let (pending, answer) = Waiting::new(op);
        self.log.append(command, pending).await?;
        answer.await.unwrap_or_else(|_| Err(hub_gone()))
    }

    /// With a shared log: tries `op` on a copy of this process's engine first, so a request the engine refuses
    /// (not allowed, too large, malformed) is answered here and leaves nothing in the log every node reads and
    /// Redis keeps. A refusal counts only once this process has applied what the log held when it was refused
    /// (it may lack a write acknowledged elsewhere a moment ago); the entry, once appended, still decides.
    async fn dry_run<O: Operation>(&self, op: O) -> Result<O, Error> {
        let (op, verdict) = self.probe(op).await?;
        if verdict.is_ok() {
            return Ok(op);
        }
        self.log.catch_up().await;
        let (op, verdict) = self.probe(op).await?;
        verdict.map(|()| op)
    }

    /// What applying `op` to a copy of the engine as it is now gives.
    async fn probe<O: Operation>(&self, op: O) -> Result<(O, Result<(), Error>), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let probe: Probe = Box::new(move |engine, now| {
            let mut copy = engine.clone();
            let verdict = op.apply_unanswered(&mut copy, now);
            let _ = tx.send((op, verdict));
        });
        self.inputs
            .send(Input::Probe(probe))
            .map_err(|_| hub_gone())?;
        rx.await.map_err(|_| hub_gone())
    }

    /// Runs `query` on a blocking thread, once `caller` has its turn for a query slot unless it is `cheap`. The
    /// query is told to stop (`spent`) once it has run for [`QUERY_BUDGET`] or its request was dropped; a request
    /// dropped while waiting leaves the line.
    async fn on_view<R: Send + 'static>(
        &self,
        caller: &Caller,
        cheap: bool,
        query: impl FnOnce(Arc<View>, presence::Spent<'_>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let slot = if cheap {
            None
        } else {
            Some(self.query_slots.acquire(caller_line(caller)).await?)
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
        .map_err(|_| Error::internal("the query failed"))?;
        drop(abandoned);
        Ok(answer)
    }

    /// The users and channels as of the last committed batch.
    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn input(&self, input: Input) {
        // The thread only stops once the hub is gone.
        let _ = self.inputs.send(input);
    }

    /// Waits until every write so far is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inputs.send(Input::Flush(tx)).map_err(|_| hub_gone())?;
        rx.await.map_err(|_| hub_gone())
    }

    pub fn counts(&self) -> Counts {
        let view = self.view();
        Counts {
            open_connections: view.open_connections(),
            online_users: view.online_users(),
            follows: view.follows(),
            frames_sent: self.sockets.frames_sent(),
            commits: self.store_state.commits.load(Ordering::Relaxed),
            writes_committed: self.store_state.writes_committed.load(Ordering::Relaxed),
        }
    }

    /// The parts the server needs that do not work now, for `/healthz`: `database` while the last commit
    /// failed for want of a working database (until one succeeds), and the log's (`redis`) while it fails.
    pub fn failing_parts(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if self.store_state.failing.load(Ordering::Relaxed) {
            failing.push("database");
        }
        failing.extend(self.log.failing());
        failing
    }

    // ----- connections -----

    /// An id for a new connection of this process.
    pub fn new_conn_id(&self) -> ConnId {
        format!("{}{}", self.log.conn_prefix(), uuid::Uuid::new_v4()).into()
    }

    /// The connections `user_id` holds, as of the last committed batch.
    pub fn connections_of(&self, user_id: &str) -> Vec<ConnId> {
        self.view().connections_of(user_id)
    }

    /// Registers connection `conn` of `user_id` (its socket already receives what is published for it),
    /// applying `details` as on connect; its queue starts with the first `health.check`. At the per-user cap,
    /// the oldest of `replaceable` gives way and is closed with 4002; with none, the connection is refused
    /// (code 71). Answered once the connect is durable.
    pub async fn connect(
        &self,
        conn: &ConnId,
        user_id: &str,
        details: &JsonMap,
        replaceable: Vec<ConnId>,
    ) -> Result<(), Error> {
        // A refused connect is told in a `connection.error` frame, whose message names no operation.
        self.run_unnamed(Connect {
            conn: Arc::clone(conn),
            user_id: user_id.to_string(),
            details: details.clone(),
            replaceable,
        })
        .await
    }

    /// Forgets a connection (see [`Engine::disconnect`]).
    pub fn disconnect(&self, conn: &ConnId, ending: Ending) {
        self.log.append_fact(
            Disconnect {
                conn: Arc::clone(conn),
                ending,
            }
            .into(),
        );
    }

    /// A client `health.check`.
    pub fn health_check(&self, conn: &ConnId) {
        self.input(Input::HealthCheck(Arc::clone(conn)));
    }

    /// Closes every connection for shutdown (1001), stamping `last_active` of everyone connected here. With a
    /// shared log this process first says farewell: its connections end on every node (for a second at most
    /// while the log is away).
    pub fn shutdown(self: &Arc<Self>) {
        let Some(farewell) = self.log.farewell() else {
            self.input(Input::Shutdown);
            return;
        };
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let (pending, answer) = Waiting::new(farewell.clone());
            let leave = async {
                if hub.log.append(farewell.into(), pending).await.is_ok() {
                    let _ = answer.await;
                }
            };
            let _ = tokio::time::timeout(FAREWELL_BUDGET, leave).await;
            hub.input(Input::Shutdown);
        });
    }

    // ----- REST operations: each answers once its writes are durable -----

    pub async fn upsert_users(
        &self,
        caller: &Caller,
        users: &BTreeMap<String, JsonMap>,
    ) -> Result<BTreeMap<String, User>, Error> {
        self.run(UpsertUsers {
            caller: caller.clone(),
            users: users.clone(),
        })
        .await
    }

    pub async fn partial_update_users(
        &self,
        caller: &Caller,
        updates: &[PartialUserUpdate],
    ) -> Result<BTreeMap<String, User>, Error> {
        self.run(PartialUpdateUsers {
            caller: caller.clone(),
            updates: updates.to_vec(),
        })
        .await
    }

    /// Filters, sorts and pages on the last committed view, off the runtime's workers; with `presence`, the
    /// connection then follows the users returned (and they are returned as they are at that moment).
    pub async fn query_users(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Error> {
        let pinned = View::pins_user_ids(&payload.filter_conditions);
        let (who, query) = (caller.clone(), payload.clone());
        self.log.catch_up().await;
        let users = self
            .on_view(caller, pinned, move |view, spent| {
                view.query_users_within(&who, &query, spent)
            })
            .await
            .and_then(|users| users)
            .map_err(|e| e.in_operation(FollowUsers::NAME))?;
        match conn_id {
            Some(conn) if payload.presence => {
                let followed = self
                    .run(FollowUsers {
                        caller: caller.clone(),
                        conn: conn.to_string(),
                        ids: users.iter().map(|u| u.id.clone()).collect(),
                    })
                    .await?;
                Ok(followed.unwrap_or(users))
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
        self.run(QueryChannel {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            channel_type: channel_type.to_string(),
            channel_id: channel_id.map(str::to_string),
            req: req.clone(),
        })
        .await
    }

    /// Filters, sorts and pages on the last committed view, off the runtime's workers; then watches the page
    /// if asked and builds the channel states (with their live watchers) on the engine.
    pub async fn query_channels(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        req: &QueryChannelsRequest,
    ) -> Result<Vec<ChannelStateResponse>, Error> {
        // A filter pinning `cid` (a client recovering its channels) looks at those channels only: it never waits.
        let pinned = View::pins_channel_cids(&req.filter_conditions);
        let (who, query) = (caller.clone(), req.clone());
        self.log.catch_up().await;
        let page = self
            .on_view(caller, pinned, move |view, spent| {
                view.select_channels_within(&who, &query, spent)
            })
            .await
            .and_then(|page| page)
            .map_err(|e| e.in_operation(ChannelStates::NAME))?;
        self.run(ChannelStates {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            page,
        })
        .await
    }

    /// `POST /channels/{type}/{id}`: members added and removed.
    pub async fn update_members(
        &self,
        caller: &Caller,
        channel_type: &str,
        channel_id: &str,
        req: &UpdateChannelRequest,
    ) -> Result<UpdateChannelResponse, Error> {
        self.run(UpdateMembers {
            caller: caller.clone(),
            channel_type: channel_type.to_string(),
            channel_id: channel_id.to_string(),
            req: req.clone(),
        })
        .await
    }

    pub async fn stop_watching(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        cid: &str,
    ) -> Result<(), Error> {
        self.run(StopWatching {
            caller: caller.clone(),
            conn_id: conn_id.map(str::to_string),
            cid: cid.to_string(),
        })
        .await
    }
}

/// Hands each entry to the hub's thread.
fn sink(inputs: &mpsc::Sender<Input>) -> Sink {
    let inputs = inputs.clone();
    Arc::new(move |entry| {
        let _ = inputs.send(Input::Entry(Box::new(entry)));
    })
}
