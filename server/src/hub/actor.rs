//! The hub's thread: it owns the engine and the store. It takes the operations queued so far as one batch,
//! applies them to the engine, commits all their writes in one transaction, and only then makes the batch
//! visible: it publishes a new read view, hands the deliveries to the bus in operation order, and answers each
//! operation. When the commit fails, the batch is applied again from the engine as it was before it, one
//! operation at a time, each committing its writes alone: a write the database refuses (a value it cannot
//! store) fails only the request that made it, which is undone; the others commit. When the database does not
//! work at all (after a few tries), every request of the batch is undone (memory stays equal to disk) and
//! answered with the failure, and none of what they did is published. Facts (a connection ended, a ping, a
//! grace window ran out, shutdown) cannot be refused: they stay applied, and their writes (`last_active`
//! stamps) wait for the next commit — or, refused by the database, are not stored.
//!
//! In cluster mode the batch also holds entries of the cluster log, applied at the time the log gave them.
//! They cannot be undone either (every node applies them): their writes are treated like the facts'. With a
//! store the nodes share, a node commits only the writes of its own entries. Grace windows do not end on this
//! node's clock: when one is due, the node asks for a `Timeout` entry (the primary node at once, the others a
//! moment later if nobody did). Requests of this node are tried on a copy of the engine ([`Probe`]) before
//! they are appended to the log.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::close_code;

use super::command::{Entry, Outcome, Waiter};
use crate::bus::Bus;
use crate::cluster::{LogItem, LogPos, Node};
use crate::model::Write;
use crate::presence::{self, ConnId, Ending, Engine, View};
use crate::store::{Stamped, Store, StoreError};

/// Most operations applied (and committed) together.
const MAX_BATCH: usize = 1024;

/// How long a node other than the primary waits past a due grace window before asking for its end, and how
/// long any node waits before asking again.
const TIMEOUT_BACKUP: TimeDelta = TimeDelta::seconds(1);

/// Waits between the tries of a failing commit: three tries over about a second.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

/// How often the thread looks whether a database that failed works again, when nothing else commits.
const STORE_RECHECK: TimeDelta = TimeDelta::seconds(1);

/// A request to the engine: applied, then answered through the [`Reply`] of its last application once the
/// batch is settled. It may be applied again when its batch is committed one operation at a time.
pub(super) type Job = Box<dyn FnMut(&mut Engine, DateTime<Utc>) -> Reply + Send>;

/// Answers a request once its batch is settled: with `None` when its writes are durable (or it had none), with
/// the store's failure when its batch could not be committed and its effects were undone.
pub(super) type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Something that happened and cannot be refused.
#[derive(Clone)]
pub(super) enum Fact {
    Disconnect(ConnId, Ending),
    HealthCheck(ConnId),
    Shutdown,
    /// Grace windows due now end.
    Timeout,
}

/// A look at the engine as it is now, answered at once (it changes nothing, so it waits for no commit).
pub(super) type Probe = Box<dyn FnOnce(&Engine, DateTime<Utc>) + Send>;

pub(super) enum Op {
    Fact(Fact),
    Request(Job),
    Probe(Probe),
    /// Cluster mode: the next entry of the log.
    Entry(Box<LogItem>),
}

/// What the thread tells of the store, shared with the hub's readers.
#[derive(Clone, Default)]
pub(super) struct StoreState {
    /// Commits that succeeded, and the writes they held.
    pub commits: Arc<std::sync::atomic::AtomicU64>,
    pub writes_committed: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the last commit failed for want of a working database (not for a refused write).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

/// What readers see: the view published after the last settled batch.
pub(super) type ViewSlot = Arc<RwLock<Arc<View>>>;

pub(super) struct Actor {
    pub engine: Engine,
    pub store: Box<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub view: ViewSlot,
    /// What the thread tells of the store.
    store_state: StoreState,
    /// Cluster mode: this process in the cluster.
    pub node: Option<Arc<Node>>,
    /// Whether the store is shared by the nodes (each commits only its own entries' writes).
    shared_store: bool,
    /// Writes of facts whose commit failed: committed before the next batch's writes.
    carry: Vec<Stamped>,
    /// Cluster mode: when this node last asked for the end of due grace windows.
    timeout_asked: Option<DateTime<Utc>>,
    /// When the thread last tried to commit.
    store_looked_at: DateTime<Utc>,
}

impl Actor {
    pub fn new(
        engine: Engine,
        store: Box<dyn Store>,
        bus: Arc<dyn Bus>,
        view: ViewSlot,
        store_state: StoreState,
        node: Option<Arc<Node>>,
    ) -> Actor {
        let shared_store = store.shared();
        Actor {
            engine,
            store,
            bus,
            view,
            store_state,
            node,
            shared_store,
            carry: Vec::new(),
            timeout_asked: None,
            store_looked_at: Utc::now(),
        }
    }

    /// When the engine next needs its clock: the end of the earliest grace window, or in cluster mode when
    /// this node should ask for it to be ended.
    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let due = self.engine.poll_timeout()?;
        let Some(node) = &self.node else {
            return Some(due);
        };
        let mut at = if node.is_primary() {
            due
        } else {
            due + TIMEOUT_BACKUP
        };
        if let Some(asked) = self.timeout_asked {
            at = at.max(asked + TIMEOUT_BACKUP);
        }
        Some(at)
    }

    /// Starts the thread; it ends once every sender of `ops` is gone.
    pub fn spawn(self, ops: Receiver<Op>) -> std::io::Result<()> {
        thread::Builder::new()
            .name("presence-hub".into())
            .spawn(move || self.run(ops))
            .map(|_| ())
    }

    fn run(mut self, ops: Receiver<Op>) {
        loop {
            // Sleep until the next operation, or until the next grace window ends (or the database is due
            // another look).
            let recheck = self
                .store_failing()
                .then(|| self.store_looked_at + STORE_RECHECK);
            let first = match self.next_deadline().into_iter().chain(recheck).min() {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    match ops.recv_timeout(wait) {
                        Ok(op) => Some(op),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                },
            };
            let mut batch = Vec::new();
            let now = Utc::now();
            if self.next_deadline().is_some_and(|at| at <= now) {
                match &self.node {
                    Some(node) => {
                        node.request_timeout();
                        self.timeout_asked = Some(now);
                    }
                    None => batch.push(Op::Fact(Fact::Timeout)),
                }
            }
            if batch.is_empty() && first.is_none() {
                self.look_at_failing_store();
                continue;
            }
            batch.extend(first);
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.settle(batch);
            self.look_at_failing_store();
        }
    }

    /// While the database is failing and nothing tried it for a while (a ping-only load writes nothing), tries
    /// what waits to be written, or an empty transaction, to notice when it works again.
    fn look_at_failing_store(&mut self) {
        if !self.store_failing() || Utc::now() < self.store_looked_at + STORE_RECHECK {
            return;
        }
        if !self.carry.is_empty() {
            self.settle(Vec::new());
            return;
        }
        self.store_looked_at = Utc::now();
        if self.store.commit(&[]).is_ok() {
            self.set_store_failing(false);
        }
    }

    fn apply(&mut self, fact: &Fact, now: DateTime<Utc>) {
        match fact {
            Fact::Disconnect(conn, ending) => {
                self.engine.disconnect(conn, *ending, now);
                self.bus.detach(conn);
            }
            Fact::HealthCheck(conn) => self.engine.health_check(conn, now),
            // A node leaving the cluster ends its connections through the log; here they are only closed.
            Fact::Shutdown if self.node.is_some() => {}
            Fact::Shutdown => self.engine.shutdown(now),
            Fact::Timeout => self.engine.handle_timeout(now),
        }
    }

    /// Applies one operation at `now`, taking the writes it made.
    fn apply_op(&mut self, op: Op, now: DateTime<Utc>) -> Applied {
        let kind = match op {
            Op::Fact(fact) => {
                self.apply(&fact, now);
                Kind::Fact(fact)
            }
            Op::Request(mut job) => {
                let reply = job(&mut self.engine, now);
                Kind::Request { job, reply }
            }
            Op::Probe(probe) => {
                probe(&self.engine, now);
                Kind::Probe
            }
            Op::Entry(item) => match *item {
                LogItem {
                    pos,
                    entry: Some(entry),
                    waiter,
                } => {
                    let outcome = entry.command.apply(&mut self.engine, &*self.bus, entry.now);
                    Kind::Entry {
                        pos,
                        entry: Box::new(entry),
                        waiter,
                        outcome,
                    }
                }
                LogItem { pos, .. } => Kind::Undecoded(pos),
            },
        };
        Applied {
            now,
            writes: self.take_writes(&kind),
            kind,
            failure: None,
        }
    }

    /// Applies the operation again (on an engine that may lack an earlier one), taking its new writes.
    fn reapply(&mut self, op: &mut Applied) {
        match &mut op.kind {
            Kind::Fact(fact) => {
                let fact = fact.clone();
                self.apply(&fact, op.now);
            }
            Kind::Request { job, reply } => *reply = job(&mut self.engine, op.now),
            Kind::Entry { entry, outcome, .. } => {
                *outcome = entry.command.apply(&mut self.engine, &*self.bus, entry.now);
            }
            Kind::Undecoded(_) | Kind::Probe => {}
        }
        op.writes = self.take_writes(&op.kind);
    }

    /// The writes the engine made for `kind`, as this node commits them.
    fn take_writes(&mut self, kind: &Kind) -> Vec<Stamped> {
        let writes = self.engine.poll_writes();
        match kind {
            // A shared store holds what the entry's own process committed; an entry replayed at start (an
            // earlier process with this node id included) must not overwrite what came after it.
            Kind::Entry { pos, entry, .. } if entry.own || !self.shared_store => {
                let pos = Some(pos.parts());
                writes
                    .into_iter()
                    .map(|write| Stamped { write, pos })
                    .collect()
            }
            Kind::Entry { .. } => Vec::new(),
            _ => writes.into_iter().map(Stamped::unlogged).collect(),
        }
    }

    /// Applies, commits and publishes (or undoes) one batch.
    fn settle(&mut self, batch: Vec<Op>) {
        let before = self.engine.clone();
        let carried = std::mem::take(&mut self.carry);
        let mut ops: Vec<Applied> = batch
            .into_iter()
            .map(|op| self.apply_op(op, Utc::now()))
            .collect();
        let writes: Vec<Stamped> = carried
            .iter()
            .chain(ops.iter().flat_map(|op| op.writes.iter()))
            .cloned()
            .collect();
        let deliveries = match self.commit(&writes) {
            Ok(()) => {
                if !writes.is_empty() {
                    self.set_store_failing(false);
                }
                self.engine.poll_deliveries()
            }
            Err(e) => {
                let down = (!e.is_refusal()).then_some(e);
                self.engine = before;
                self.one_at_a_time(carried, &mut ops, down)
            }
        };
        let view = Arc::new(self.engine.view());
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        if !deliveries.is_empty() {
            self.bus.publish(deliveries);
        }
        let applied = ops.iter().rev().find_map(|op| match op.kind {
            Kind::Entry { pos, .. } | Kind::Undecoded(pos) => Some(pos),
            _ => None,
        });
        if let (Some(node), Some(pos)) = (&self.node, applied) {
            node.set_applied(pos);
        }
        let mut shutdown = false;
        for op in ops {
            match op.kind {
                Kind::Request { reply, .. } => reply(op.failure.as_ref()),
                Kind::Entry {
                    waiter: Some(waiter),
                    outcome,
                    ..
                } => waiter(outcome, op.failure.as_ref()),
                Kind::Fact(Fact::Shutdown) => shutdown = true,
                _ => {}
            }
        }
        if shutdown {
            self.bus.close_all(close_code::GOING_AWAY);
        }
    }

    /// After a batch failed to commit: applies its operations again from the engine as it was before the batch
    /// (`self.engine`), committing each one's writes in its own transaction, so a write the database refuses
    /// fails only the operation that made it. A request whose writes fail is undone and answered with the
    /// failure; facts and log entries cannot be undone: a write of theirs the database refuses is dropped,
    /// and writes that failed because the database is `down` wait for the next commit. Once the database is
    /// down (from the start, or found so on the way) nothing more is tried: every request is undone, as the
    /// whole batch would be. Returns the deliveries of what stays applied.
    fn one_at_a_time(
        &mut self,
        carried: Vec<Stamped>,
        ops: &mut [Applied],
        mut down: Option<StoreError>,
    ) -> Vec<presence::Delivery> {
        let mut waiting = Vec::new();
        match self.commit_alone(&carried, &mut down) {
            Ok(()) => {}
            Err(e) if e.is_refusal() => dropped(&e, carried.len()),
            Err(_) => waiting = carried,
        }
        for op in ops.iter_mut() {
            let mark = self.engine.clone();
            self.reapply(op);
            let Err(e) = self.commit_alone(&op.writes, &mut down) else {
                continue;
            };
            if matches!(op.kind, Kind::Request { .. }) {
                self.engine = mark;
            } else if e.is_refusal() {
                dropped(&e, op.writes.len());
            } else {
                waiting.append(&mut op.writes);
            }
            op.failure = Some(e);
        }
        self.carry = compact(waiting);
        self.set_store_failing(down.is_some());
        self.engine.poll_deliveries()
    }

    /// Commits `writes` in one transaction unless the database is known to be `down`, noting it when it is.
    fn commit_alone(
        &mut self,
        writes: &[Stamped],
        down: &mut Option<StoreError>,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(e) = down {
            return Err(e.clone());
        }
        self.store_looked_at = Utc::now();
        match self.store.commit(writes) {
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

    fn count_commit(&self, writes: usize) {
        self.store_state
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.store_state
            .writes_committed
            .fetch_add(writes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn store_failing(&self) -> bool {
        self.store_state
            .failing
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_store_failing(&self, failing: bool) {
        self.store_state
            .failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits `writes`, trying again a few times before giving up (a refused write is not tried again: it
    /// would be refused again).
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut delays = RETRY_DELAYS.iter();
        loop {
            self.store_looked_at = Utc::now();
            match self.store.commit(writes) {
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
                        thread::sleep(*delay);
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

/// A fact's or log entry's writes that the database refused: they cannot be undone in memory, so what is stored
/// lacks them.
fn dropped(e: &StoreError, writes: usize) {
    tracing::error!(error = %e, writes, "the database refused writes that cannot be undone; they are not stored");
}

/// One operation of a batch as applied.
struct Applied {
    now: DateTime<Utc>,
    kind: Kind,
    writes: Vec<Stamped>,
    /// Why its writes are not durable, when they are not.
    failure: Option<StoreError>,
}

enum Kind {
    Fact(Fact),
    Request {
        job: Job,
        reply: Reply,
    },
    Entry {
        pos: LogPos,
        entry: Box<Entry>,
        waiter: Option<Waiter>,
        outcome: Outcome,
    },
    /// A log entry that could not be decoded: only its position counts.
    Undecoded(LogPos),
    Probe,
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
