//! The driver's logic, with no IO of its own: it applies a batch of inputs to the engine, commits all their writes
//! in one transaction through the [`Store`] it is given, and only then lets the batch be seen — its deliveries,
//! socket orders and answers come out in a [`Settled`] for the thread to carry out. When the commit fails, the
//! batch is applied again from the engine as it was before it, one entry at a time, each committing its writes
//! alone: a write the database refuses (a value it cannot store) fails only the request that made it, which is
//! undone; the others commit. When the database does not work at all (after a few tries), every request of the
//! batch is undone (memory stays equal to disk) and answered with the failure. What cannot be refused — a
//! connection ended, a ping, a grace window ran out, shutdown, and every entry of a shared log (every node applies
//! it) — stays applied; its writes (`last_active` stamps, mostly) wait for the next commit (the carry), or,
//! refused by the database, are not stored. Time and waiting come from a [`Clock`], so tests drive all of this
//! with a manual clock and a store that fails on command.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::log::{Entry, LogPos};
use super::pending::Pending;
use crate::model::Write;
use crate::presence::command::{conn_prefix, Command};
use crate::presence::{ConnId, Delivery, Engine, SocketOrder};
use crate::store::{Stamped, Store, StoreError};

/// Waits between the tries of a failing commit: three tries over about a second.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

/// How long a node other than the primary waits past a due grace window before asking for its end, and how
/// long any node waits before asking again while its ask is not applied.
pub const TIMEOUT_BACKUP: TimeDelta = TimeDelta::seconds(1);

/// The time, and a way to wait.
pub trait Clock {
    fn now(&mut self) -> DateTime<Utc>;
    fn pause(&mut self, how_long: Duration);
}

/// The wall clock; pausing blocks the thread.
pub struct WallClock;

impl Clock for WallClock {
    fn now(&mut self) -> DateTime<Utc> {
        Utc::now()
    }

    fn pause(&mut self, how_long: Duration) {
        std::thread::sleep(how_long);
    }
}

/// A look at the engine as it is at that point of the batch, answered at once (it changes nothing).
pub type Probe = Box<dyn FnOnce(&Engine, DateTime<Utc>) + Send>;

/// What the driver applies.
pub enum Input {
    /// The next entry of the log.
    Entry(Box<Entry>),
    /// A client's `health.check`: refreshes `last_active` here only, never logged.
    HealthCheck(ConnId),
    /// This process stops: stamps `last_active` of the users connected here.
    Shutdown,
    Probe(Probe),
    /// Answered once the batch holding it is settled: every write before it is then durable (or failed).
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Webhook events this process delivered (or gave up on): out of the outbox.
    WebhooksDone(Vec<String>),
}

/// What the driver tells of the store, shared with the hub's readers.
#[derive(Clone, Default)]
pub struct StoreState {
    /// Commits that succeeded, and the writes they held.
    pub commits: Arc<AtomicU64>,
    pub writes_committed: Arc<AtomicU64>,
    /// Whether the last commit failed for want of a working database (not for a refused write).
    pub failing: Arc<AtomicBool>,
}

/// A settled batch, for the thread to make visible in this order: the deliveries, the socket orders, the
/// answers (each with why its writes are not durable, and whether it was undone for it).
#[derive(Default)]
pub struct Settled {
    pub deliveries: Vec<Delivery>,
    pub orders: Vec<SocketOrder>,
    pub answers: Vec<(Box<dyn Pending>, Option<StoreError>, bool)>,
    /// The last log position the batch applied.
    pub applied: Option<LogPos>,
    /// The batch held a shutdown: every socket is to be closed.
    pub shutdown: bool,
    /// Flushes to answer.
    pub flushed: Vec<tokio::sync::oneshot::Sender<()>>,
}

pub struct Driver {
    engine: Engine,
    /// The start of the connection ids of this process.
    prefix: String,
    /// Whether the store is shared by the nodes (each commits only its own entries' writes).
    shared_store: bool,
    store_state: StoreState,
    /// Writes of what cannot be undone whose commit failed: committed before the next batch's writes.
    carry: Vec<Stamped>,
    /// When this process last asked for the end of due grace windows, while that ask is not applied.
    timeout_asked: Option<DateTime<Utc>>,
    /// When the driver last tried to commit.
    store_looked_at: DateTime<Utc>,
}

/// How long, while the database is failing and nothing commits, before the driver looks whether it works again.
pub const STORE_RECHECK: TimeDelta = TimeDelta::seconds(1);

impl Driver {
    pub fn new(
        engine: Engine,
        prefix: &str,
        shared_store: bool,
        store_state: StoreState,
        now: DateTime<Utc>,
    ) -> Driver {
        Driver {
            engine,
            prefix: prefix.to_string(),
            shared_store,
            store_state,
            carry: Vec::new(),
            timeout_asked: None,
            store_looked_at: now,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// When the driver next needs its clock: when this process should ask for the end of the earliest grace
    /// window (at once when `primary`, else [`TIMEOUT_BACKUP`] later), or when a failing database is due another
    /// look.
    pub fn next_deadline(&self, primary: bool) -> Option<DateTime<Utc>> {
        let timeout = self.engine.poll_timeout().map(|due| {
            let at = if primary { due } else { due + TIMEOUT_BACKUP };
            match self.timeout_asked {
                Some(asked) => at.max(asked + TIMEOUT_BACKUP),
                None => at,
            }
        });
        let recheck = self
            .store_failing()
            .then(|| self.store_looked_at + STORE_RECHECK);
        timeout.into_iter().chain(recheck).min()
    }

    /// Whether to ask for the end of due grace windows now; noted as asked when it is.
    pub fn ask_timeout(&mut self, now: DateTime<Utc>, primary: bool) -> bool {
        let due = self.engine.poll_timeout().is_some_and(|due| {
            let at = if primary { due } else { due + TIMEOUT_BACKUP };
            at <= now
                && self
                    .timeout_asked
                    .is_none_or(|asked| asked + TIMEOUT_BACKUP <= now)
        });
        if due {
            self.timeout_asked = Some(now);
        }
        due
    }

    /// Applies, commits and settles (or undoes) one batch.
    pub fn settle(
        &mut self,
        batch: Vec<Input>,
        store: &mut dyn Store,
        clock: &mut dyn Clock,
    ) -> Settled {
        let before = self.engine.clone();
        let carried = std::mem::take(&mut self.carry);
        let mut ops: Vec<Applied> = batch
            .into_iter()
            .map(|input| self.apply_input(input, clock.now()))
            .collect();
        let writes: Vec<Stamped> = carried
            .iter()
            .chain(ops.iter().flat_map(|op| op.writes.iter()))
            .cloned()
            .collect();
        if self.shared_store {
            // Before this batch's own events (a dead node's users going offline among them), so that each
            // user's events keep their order.
            self.adopt_dead_outboxes(&ops, store);
        }
        let (deliveries, orders) = match self.commit(&writes, store, clock) {
            Ok(()) => {
                if !writes.is_empty() {
                    self.set_store_failing(false);
                }
                (
                    self.engine.poll_deliveries(),
                    self.engine.poll_socket_orders(),
                )
            }
            Err(e) => {
                let down = (!e.is_refusal()).then_some(e);
                self.engine = before;
                self.one_at_a_time(carried, &mut ops, down, store, clock)
            }
        };
        let mut settled = Settled {
            deliveries,
            orders,
            ..Settled::default()
        };
        for op in ops {
            match op.kind {
                Kind::Entry { entry, .. } => {
                    settled.applied = Some(entry.pos);
                    if let Some(pending) = entry.pending {
                        settled.answers.push((pending, op.failure, op.undone));
                    }
                }
                Kind::Shutdown => settled.shutdown = true,
                Kind::Flush(tx) => settled.flushed.push(tx),
                Kind::HealthCheck(_) | Kind::Probe | Kind::WebhooksDone(_) => {}
            }
        }
        settled
    }

    /// In a store the nodes share: a node found dead by this one (its `NodeDown` appended here) leaves webhook
    /// events it had not delivered; this node delivers them.
    fn adopt_dead_outboxes(&mut self, ops: &[Applied], store: &mut dyn Store) {
        for op in ops {
            let Kind::Entry { entry, .. } = &op.kind else {
                continue;
            };
            let Some(Command::NodeDown(down)) = &entry.command else {
                continue;
            };
            if entry.own && conn_prefix(&down.node) != self.prefix {
                if let Err(e) = store.adopt_outbox(&down.node) {
                    tracing::warn!(node = %down.node, error = %e, "webhooks: could not adopt a dead node's events");
                }
            }
        }
    }

    /// While the database is failing and nothing tried it for a while (a ping-only load writes nothing), tries
    /// what waits to be written, or an empty transaction, to notice when it works again.
    pub fn look_at_failing_store(
        &mut self,
        store: &mut dyn Store,
        clock: &mut dyn Clock,
    ) -> Option<Settled> {
        let now = clock.now();
        if !self.store_failing() || now < self.store_looked_at + STORE_RECHECK {
            return None;
        }
        if !self.carry.is_empty() {
            return Some(self.settle(Vec::new(), store, clock));
        }
        self.store_looked_at = now;
        if store.commit(&[]).is_ok() {
            self.set_store_failing(false);
        }
        None
    }

    /// Applies one input at `now` (an entry at its own time, when the log gave it one), taking its writes.
    fn apply_input(&mut self, input: Input, now: DateTime<Utc>) -> Applied {
        let kind = match input {
            Input::Entry(mut entry) => {
                let now = entry.now.unwrap_or(now);
                self.apply_entry(&mut entry, now);
                Kind::Entry { entry, now }
            }
            Input::HealthCheck(conn) => {
                self.engine.health_check(&conn, now);
                Kind::HealthCheck(conn)
            }
            Input::Shutdown => {
                self.engine.shutdown(&self.prefix, now);
                Kind::Shutdown
            }
            Input::Probe(probe) => {
                probe(&self.engine, now);
                Kind::Probe
            }
            Input::Flush(tx) => Kind::Flush(tx),
            Input::WebhooksDone(ids) => Kind::WebhooksDone(ids),
        };
        Applied {
            now,
            writes: self.take_writes(&kind),
            kind,
            failure: None,
            undone: false,
        }
    }

    /// Applies an entry at `now`: for its caller (typed result kept) when one waits on it, else as a command
    /// alone.
    fn apply_entry(&mut self, entry: &mut Entry, now: DateTime<Utc>) {
        if matches!(entry.command, Some(Command::Timeout)) {
            self.timeout_asked = None;
        }
        match (&mut entry.pending, &entry.command) {
            (Some(pending), _) => pending.apply(&mut self.engine, now),
            (None, Some(command)) => {
                // A refusal concerns only the caller, who is on the process that appended it.
                let _ = command.apply(&mut self.engine, now);
            }
            (None, None) => {}
        }
    }

    /// Applies an input again (on an engine that may lack an earlier one), taking its new writes.
    fn reapply(&mut self, op: &mut Applied) {
        match &mut op.kind {
            Kind::HealthCheck(conn) => self.engine.health_check(conn, op.now),
            Kind::Shutdown => self.engine.shutdown(&self.prefix, op.now),
            Kind::Entry { entry, now } => {
                let now = *now;
                self.apply_entry(entry, now);
            }
            Kind::Probe | Kind::Flush(_) | Kind::WebhooksDone(_) => {}
        }
        op.writes = self.take_writes(&op.kind);
    }

    /// The writes the engine made for `kind`, as this process commits them.
    fn take_writes(&mut self, kind: &Kind) -> Vec<Stamped> {
        let writes = self.engine.poll_writes();
        let mut stamped: Vec<Stamped> = match kind {
            Kind::WebhooksDone(ids) => ids
                .iter()
                .map(|id| Stamped::unlogged(Write::WebhookDone(id.clone())))
                .collect(),
            // A shared store holds what the entry's own process committed; an entry replayed at start (an
            // earlier process with this node id included) must not overwrite what came after it.
            Kind::Entry { entry, .. } if entry.shared && (entry.own || !self.shared_store) => {
                let pos = Some(entry.pos.parts());
                writes
                    .into_iter()
                    // Each node applies every entry; only the one that appended it delivers its events.
                    .filter(|write| entry.own || !matches!(write, Write::Webhook(_)))
                    .map(|write| Stamped { write, pos })
                    .collect()
            }
            Kind::Entry { entry, .. } if entry.shared => Vec::new(),
            _ => writes.into_iter().map(Stamped::unlogged).collect(),
        };
        for Stamped { write, .. } in &mut stamped {
            // Each webhook event this process commits gets its id here: the same on every delivery attempt.
            if let Write::Webhook(event) = write {
                event.id = uuid::Uuid::new_v4().to_string();
            }
        }
        stamped
    }

    /// After a batch failed to commit: applies its inputs again from the engine as it was before the batch,
    /// committing each one's writes in its own transaction, so a write the database refuses fails only the input
    /// that made it. A request of the local log whose writes fail is undone and answered with the failure; what
    /// cannot be undone keeps applied: a write of it the database refuses is dropped, and writes that failed
    /// because the database is `down` wait for the next commit. Once the database is down (from the start, or
    /// found so on the way) nothing more is tried: every request is undone, as the whole batch would be. Returns
    /// the deliveries and socket orders of what stays applied.
    fn one_at_a_time(
        &mut self,
        carried: Vec<Stamped>,
        ops: &mut [Applied],
        mut down: Option<StoreError>,
        store: &mut dyn Store,
        clock: &mut dyn Clock,
    ) -> (Vec<Delivery>, Vec<SocketOrder>) {
        let mut waiting = Vec::new();
        match self.commit_alone(&carried, &mut down, store, clock) {
            Ok(()) => {}
            Err(e) if e.is_refusal() => dropped(&e, carried.len()),
            Err(_) => waiting = carried,
        }
        for op in ops.iter_mut() {
            let mark = self.engine.clone();
            self.reapply(op);
            let Err(e) = self.commit_alone(&op.writes, &mut down, store, clock) else {
                continue;
            };
            if op.kind.undoable() {
                self.engine = mark;
                op.undone = true;
            } else if e.is_refusal() {
                dropped(&e, op.writes.len());
            } else {
                waiting.append(&mut op.writes);
            }
            op.failure = Some(e);
        }
        self.carry = compact(waiting);
        self.set_store_failing(down.is_some());
        (
            self.engine.poll_deliveries(),
            self.engine.poll_socket_orders(),
        )
    }

    /// Commits `writes` in one transaction unless the database is known to be `down`, noting it when it is.
    fn commit_alone(
        &mut self,
        writes: &[Stamped],
        down: &mut Option<StoreError>,
        store: &mut dyn Store,
        clock: &mut dyn Clock,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(e) = down {
            return Err(e.clone());
        }
        self.store_looked_at = clock.now();
        match store.commit(writes) {
            Ok(()) => {
                self.count_commit(writes.len());
                Ok(())
            }
            Err(e) => {
                if !e.is_refusal() {
                    tracing::error!(error = %e, "database commit failed; the batch's requests are undone");
                    *down = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// Commits `writes`, trying again a few times before giving up (a refused write is not tried again: it
    /// would be refused again).
    fn commit(
        &mut self,
        writes: &[Stamped],
        store: &mut dyn Store,
        clock: &mut dyn Clock,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut delays = RETRY_DELAYS.iter();
        loop {
            self.store_looked_at = clock.now();
            match store.commit(writes) {
                Ok(()) => {
                    self.count_commit(writes.len());
                    return Ok(());
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(error = %e, writes = writes.len(), "the database refused a write of the batch; committing its operations one at a time");
                    return Err(e);
                }
                Err(e) => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(error = %e, writes = writes.len(), "database commit failed, retrying");
                        clock.pause(*delay);
                    }
                    None => return Err(e),
                },
            }
        }
    }

    fn count_commit(&self, writes: usize) {
        self.store_state.commits.fetch_add(1, Ordering::Relaxed);
        self.store_state
            .writes_committed
            .fetch_add(writes as u64, Ordering::Relaxed);
    }

    pub fn store_failing(&self) -> bool {
        self.store_state.failing.load(Ordering::Relaxed)
    }

    fn set_store_failing(&self, failing: bool) {
        self.store_state.failing.store(failing, Ordering::Relaxed);
    }
}

/// Writes of what cannot be undone that the database refused: what is stored lacks them.
fn dropped(e: &StoreError, writes: usize) {
    tracing::error!(error = %e, writes, "the database refused writes that cannot be undone; they are not stored");
}

/// One input of a batch as applied.
struct Applied {
    now: DateTime<Utc>,
    kind: Kind,
    writes: Vec<Stamped>,
    /// Why its writes are not durable, when they are not.
    failure: Option<StoreError>,
    /// It was undone for that failure.
    undone: bool,
}

enum Kind {
    Entry {
        entry: Box<Entry>,
        /// The time it was applied at.
        now: DateTime<Utc>,
    },
    HealthCheck(ConnId),
    Shutdown,
    Probe,
    Flush(tokio::sync::oneshot::Sender<()>),
    WebhooksDone(Vec<String>),
}

impl Kind {
    /// A caller's request on the local log: nobody else has seen it, so it can be undone.
    fn undoable(&self) -> bool {
        matches!(self, Kind::Entry { entry, .. }
            if !entry.shared && entry.command.as_ref().is_some_and(Command::is_request))
    }
}

/// `writes` without the `last_active` stamps a later stamp of the same user overrides, so writes waiting on an
/// unwritable database grow with the number of users, not of pings.
fn compact(writes: Vec<Stamped>) -> Vec<Stamped> {
    let mut last_touch: HashMap<&str, usize> = HashMap::new();
    for (i, Stamped { write: w, .. }) in writes.iter().enumerate() {
        if let Write::TouchLastActive(id, _) = w {
            last_touch.insert(id, i);
        }
    }
    let keep: Vec<bool> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| match &w.write {
            Write::TouchLastActive(id, _) => last_touch.get(id.as_str()) == Some(&i),
            _ => true,
        })
        .collect();
    writes
        .into_iter()
        .zip(keep)
        .filter_map(|(w, keep)| keep.then_some(w))
        .collect()
}
