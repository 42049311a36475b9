//! The hub's thread: it owns the engine and the store. It takes the operations queued so far as one batch,
//! applies them to the engine, commits all their writes in one transaction, and only then makes the batch
//! visible: it publishes a new read view, hands the deliveries to the bus in operation order, and answers each
//! operation. A commit that still fails after a few tries puts the engine back to the copy taken before the
//! batch (memory stays equal to disk), answers each request of the batch with the failure and publishes none
//! of what they did. Facts (a connection ended, a ping, a grace window ran out, shutdown) cannot be refused:
//! they are applied again to the restored engine, and their writes (`last_active` stamps) wait for the next
//! commit.
//!
//! In cluster mode the batch also holds entries of the cluster log, applied at the time the log gave them.
//! They cannot be undone either (every node applies them): a failed commit leaves their writes waiting like
//! the facts'. With a store the nodes share, a node commits only the writes of its own entries. Grace windows
//! do not end on this node's clock: when one is due, the node asks for a `Timeout` entry (the primary node at
//! once, the others a moment later if nobody did).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::close_code;

use crate::bus::Bus;
use crate::cluster::{LogItem, LogPos, Node};
use crate::model::Write;
use crate::presence::{ConnId, Ending, Engine, View};
use crate::store::{Stamped, Store, StoreError};

/// Most operations applied (and committed) together.
const MAX_BATCH: usize = 1024;

/// How long a node other than the primary waits past a due grace window before asking for its end, and how
/// long any node waits before asking again.
const TIMEOUT_BACKUP: TimeDelta = TimeDelta::seconds(1);

/// Waits between the tries of a failing commit: three tries over about a second.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

/// A request to the engine: applied, then answered through its [`Reply`] once the batch is settled.
pub(super) type Job = Box<dyn FnOnce(&mut Engine, DateTime<Utc>) -> Reply + Send>;

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

pub(super) enum Op {
    Fact(Fact),
    Request(Job),
    /// Cluster mode: the next entry of the log.
    Entry(Box<LogItem>),
}

/// What readers see: the view published after the last settled batch.
pub(super) type ViewSlot = Arc<RwLock<Arc<View>>>;

pub(super) struct Actor {
    pub engine: Engine,
    pub store: Box<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub view: ViewSlot,
    /// Commits that succeeded, and the writes they held.
    pub commits: Arc<std::sync::atomic::AtomicU64>,
    /// Cluster mode: this process in the cluster.
    pub node: Option<Arc<Node>>,
    /// Whether the store is shared by the nodes (each commits only its own entries' writes).
    shared_store: bool,
    pub writes_committed: Arc<std::sync::atomic::AtomicU64>,
    /// Writes of facts whose commit failed: committed before the next batch's writes.
    carry: Vec<Stamped>,
    /// Cluster mode: when this node last asked for the end of due grace windows.
    timeout_asked: Option<DateTime<Utc>>,
}

impl Actor {
    pub fn new(
        engine: Engine,
        store: Box<dyn Store>,
        bus: Arc<dyn Bus>,
        view: ViewSlot,
        commits: Arc<std::sync::atomic::AtomicU64>,
        node: Option<Arc<Node>>,
        writes_committed: Arc<std::sync::atomic::AtomicU64>,
    ) -> Actor {
        let shared_store = store.shared();
        Actor {
            engine,
            store,
            bus,
            view,
            commits,
            node,
            shared_store,
            writes_committed,
            carry: Vec::new(),
            timeout_asked: None,
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
            // Sleep until the next operation, or until the next grace window ends.
            let first = match self.next_deadline() {
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

    /// Applies, commits and publishes (or undoes) one batch.
    fn settle(&mut self, batch: Vec<Op>) {
        let before = self.engine.clone();
        let mut facts = Vec::new();
        let mut replies = Vec::new();
        let mut answers = Vec::new();
        let mut applied: Option<LogPos> = None;
        let carried = self.carry.len();
        let mut writes = std::mem::take(&mut self.carry);
        for op in batch {
            let now = Utc::now();
            match op {
                Op::Fact(fact) => {
                    self.apply(&fact, now);
                    facts.push((fact, now));
                }
                Op::Request(job) => replies.push(job(&mut self.engine, now)),
                Op::Entry(item) => {
                    let LogItem { pos, entry, waiter } = *item;
                    applied = Some(pos);
                    let Some(entry) = entry else {
                        continue;
                    };
                    // Writes so far belong to the facts and requests before this entry.
                    writes.extend(self.engine.poll_writes().into_iter().map(Stamped::unlogged));
                    let outcome = entry.command.apply(&mut self.engine, &*self.bus, entry.now);
                    let entry_writes = self.engine.poll_writes();
                    // A shared store holds what the entry's own process committed; an entry replayed at start
                    // (an earlier process with this node id included) must not overwrite what came after it.
                    if entry.own || !self.shared_store {
                        let pos = Some(pos.parts());
                        writes.extend(entry_writes.into_iter().map(|write| Stamped { write, pos }));
                    }
                    if let Some(waiter) = waiter {
                        answers.push((waiter, outcome));
                    }
                }
            }
        }
        writes.extend(self.engine.poll_writes().into_iter().map(Stamped::unlogged));
        let mut deliveries = self.engine.poll_deliveries();
        let failure = self.commit(&writes).err();
        if failure.is_some() {
            if !replies.is_empty() && applied.is_none() {
                // Undo the batch, then apply its facts again: they happened whether or not the requests did.
                self.engine = before;
                writes.truncate(carried);
                for (fact, now) in &facts {
                    self.apply(fact, *now);
                }
                writes.extend(self.engine.poll_writes().into_iter().map(Stamped::unlogged));
                deliveries = self.engine.poll_deliveries();
            }
            // What is left is the facts' (and log entries') writes: they wait for the next commit.
            self.carry = compact(writes);
        }
        let view = Arc::new(self.engine.view());
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        if !deliveries.is_empty() {
            self.bus.publish(deliveries);
        }
        if let (Some(node), Some(pos)) = (&self.node, applied) {
            node.set_applied(pos);
        }
        for reply in replies {
            reply(failure.as_ref());
        }
        for (waiter, outcome) in answers {
            waiter(outcome, failure.as_ref());
        }
        if facts.iter().any(|(f, _)| matches!(f, Fact::Shutdown)) {
            self.bus.close_all(close_code::GOING_AWAY);
        }
    }

    /// Commits `writes`, trying again a few times before giving up.
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self.store.commit(writes) {
                Ok(()) => {
                    self.commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.writes_committed
                        .fetch_add(writes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(error = %e, writes = writes.len(), "database commit failed, retrying");
                        thread::sleep(*delay);
                    }
                    None => {
                        tracing::error!(error = %e, writes = writes.len(), "database commit failed; the batch is undone");
                        return Err(e);
                    }
                },
            }
        }
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
