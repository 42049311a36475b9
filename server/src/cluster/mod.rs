//! Cluster mode: several server processes ("nodes") on one Redis run the same engine state by applying the
//! same ordered log of [`Command`]s. [`Node`] is the hub's [`Log`] on a Redis stream: a node appends each
//! state-changing operation of its own (`XADD`), every node reads the stream in order (`XREAD BLOCK`) and hands
//! each entry to its hub thread, and the node an entry came from answers its waiting caller when it applies it.
//! The entry's stream id gives its time, so every node applies it at the same `now`. Each node delivers only to
//! the connections it holds; membership and node death are in [`membership`].

pub(crate) mod log;
mod membership;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;
use tokio::sync::watch;

use self::log::RawEntry;
use crate::error::{Error, ErrorKind};
use crate::hub::log::{Author, Entry, Log, LogPos, Sink};
use crate::hub::pending::{Pending, Waiting};
use crate::presence::command::Command;
use crate::presence::command::{conn_prefix, NodeDown};
use crate::startup::StartupError;

/// Where a node finds the others.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub node_id: String,
}

/// How long a query waits for this node to apply what the log held when the query arrived.
const CATCH_UP_BUDGET: Duration = Duration::from_secs(5);

/// Waits between tries of an append that must not be lost (a connection ended, a grace window ran out).
const APPEND_RETRY: Duration = Duration::from_millis(500);

/// This process as a member of the cluster.
pub struct Node {
    id: String,
    /// The start of the ids of the connections this node holds.
    prefix: String,
    client: redis::Client,
    /// Appends, heartbeats and reads of the log's end; reconnects by itself.
    redis: ConnectionManager,
    runtime: Handle,
    /// This process as the author of entries. Its sequence numbers start at the microsecond it connected, so
    /// they are above those of an earlier process with the same node id: its entries, replayed at start, are not
    /// this one's.
    author: Author,
    next_seq: Arc<AtomicU64>,
    /// Callers of this node's entries not yet applied, by the entry's sequence number.
    waiters: Mutex<HashMap<u64, Box<dyn Pending>>>,
    /// The last entry the hub thread has applied and published.
    applied: watch::Sender<LogPos>,
    /// Whether this node has the lowest id among the live ones: it appends the end of grace windows; the
    /// others only when it has not done so a moment later.
    primary: Arc<AtomicBool>,
    /// Nodes that appended entries and have not been declared gone since.
    known: Arc<Mutex<HashSet<String>>>,
    /// Whether the last read of the log succeeded (one runs every two seconds at most).
    readable: Arc<AtomicBool>,
    /// Whether the last append or heartbeat (every three seconds) succeeded: they share a connection, which
    /// after an outage takes a failed command to be made again.
    writable: Arc<AtomicBool>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: &redis::RedisError) -> Error {
    Error::internal(format!("the cluster log (Redis) is unavailable: {e}"))
}

impl Node {
    /// Connects to Redis.
    pub async fn connect(settings: &ClusterSettings) -> Result<Arc<Node>, StartupError> {
        let client = redis::Client::open(settings.redis_url.as_str())
            .map_err(|e| StartupError::Setting(format!("bad --redis-url: {e}")))?;
        let redis = ConnectionManager::new_with_config(client.clone(), manager_config(None))
            .await
            .map_err(|e| StartupError::Cluster {
                what: "cannot reach Redis",
                error: format!("{}: {e}", settings.redis_url),
            })?;
        let first_seq = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1);
        Ok(Arc::new(Node {
            id: settings.node_id.clone(),
            prefix: conn_prefix(&settings.node_id),
            client,
            redis,
            runtime: Handle::current(),
            author: Author {
                id: settings.node_id.clone(),
                first_seq,
            },
            next_seq: Arc::new(AtomicU64::new(first_seq)),
            waiters: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(LogPos::default()),
            primary: Arc::new(AtomicBool::new(true)),
            known: Arc::new(Mutex::new(HashSet::new())),
            readable: Arc::new(AtomicBool::new(true)),
            writable: Arc::new(AtomicBool::new(true)),
        }))
    }

    /// Starts reading the log into `sink` (from its first entry) and the heartbeat; then announces this node,
    /// ending whatever connections an earlier process with the same id left in the log, and returns once
    /// everything the log held is applied.
    pub async fn start(self: &Arc<Self>, sink: Sink) -> Result<(), StartupError> {
        membership::beat(&mut self.redis.clone(), &self.id)
            .await
            .map_err(|e| StartupError::Cluster {
                what: "cannot register in Redis",
                error: e.to_string(),
            })?;
        let reader = ConnectionManager::new_with_config(
            self.client.clone(),
            manager_config(Some(log::BLOCK + Duration::from_secs(5))),
        )
        .await
        .map_err(|e| StartupError::Cluster {
            what: "cannot reach Redis",
            error: e.to_string(),
        })?;
        let node = Arc::clone(self);
        self.runtime.spawn(log::read(
            reader,
            Arc::clone(&self.readable),
            Arc::clone(&self.writable),
            move |pos, raw| sink(node.entry(pos, raw)),
        ));
        let node = Arc::clone(self);
        self.runtime.spawn(membership::run(
            self.redis.clone(),
            self.id.clone(),
            Arc::clone(&self.known),
            Arc::clone(&self.primary),
            Arc::clone(&self.writable),
            move |gone| node.append_fact(NodeDown { node: gone }.into()),
        ));
        // Ends what an earlier process with this id left, and marks where this node has caught up.
        let leave = NodeDown {
            node: self.id.clone(),
        };
        let (pending, applied) = Waiting::new(leave.clone());
        let failed = |error: String| StartupError::Cluster {
            what: "cannot catch up with the cluster log",
            error,
        };
        self.submit(leave.into(), pending)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match applied.await {
            Ok(result) => result.map_err(|e| failed(e.to_string())),
            Err(_) => Err(failed("the hub stopped".to_string())),
        }
    }

    /// Whether Redis answered the last time this node read the log and the last time it wrote there.
    pub fn redis_reachable(&self) -> bool {
        self.readable.load(Ordering::Relaxed) && self.writable.load(Ordering::Relaxed)
    }

    /// Appends `command`; `waiter` is called once this node has applied it. Fails when Redis cannot be reached,
    /// and with 413 / code 22 when the command takes more than [`log::MAX_ENTRY_BYTES`] (every node would hold
    /// and parse it).
    async fn submit(&self, command: Command, pending: Box<dyn Pending>) -> Result<(), Error> {
        let json = log::encode(&command).map_err(|e| unavailable(&e))?;
        if json.len() > log::MAX_ENTRY_BYTES {
            return Err(Error::new(
                ErrorKind::PayloadTooBig,
                format!(
                    "the request takes {} bytes in the cluster log, more than {}",
                    json.len(),
                    log::MAX_ENTRY_BYTES
                ),
            ));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiters).insert(seq, pending);
        let appended = log::append(&mut self.redis.clone(), &self.id, seq, &json).await;
        self.writable.store(appended.is_ok(), Ordering::Relaxed);
        if let Err(e) = appended {
            lock(&self.waiters).remove(&seq);
            return Err(unavailable(&e));
        }
        Ok(())
    }

    /// Appends `command`, which nobody waits for, trying again until Redis takes it.
    fn submit_fact(&self, command: Command) {
        let (mut redis, id) = (self.redis.clone(), self.id.clone());
        let (next_seq, writable) = (Arc::clone(&self.next_seq), Arc::clone(&self.writable));
        self.runtime.spawn(async move {
            let json = match log::encode(&command) {
                Ok(json) => json,
                Err(e) => return tracing::error!(error = %e, "cannot encode a cluster log entry"),
            };
            loop {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let appended = log::append(&mut redis, &id, seq, &json).await;
                writable.store(appended.is_ok(), Ordering::Relaxed);
                match appended {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot append to the cluster log; retrying");
                        tokio::time::sleep(APPEND_RETRY).await;
                    }
                }
            }
        });
    }

    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::Relaxed)
    }

    /// An entry read from the log, for the hub thread, with its caller if this node appended it. Keeps track
    /// of the nodes the log names.
    fn entry(&self, pos: LogPos, raw: Option<RawEntry>) -> Entry {
        let mut entry = Entry {
            pos,
            now: Some(pos.time()),
            command: None,
            own: false,
            shared: true,
            pending: None,
        };
        let Some(RawEntry {
            origin,
            seq,
            command,
        }) = raw
        else {
            return entry;
        };
        match &command {
            Command::NodeDown(NodeDown { node }) => {
                lock(&self.known).remove(node);
            }
            _ if origin != self.id && !lock(&self.known).contains(&origin) => {
                lock(&self.known).insert(origin.clone());
            }
            _ => {}
        }
        entry.own = self.author.wrote(&origin, seq);
        entry.pending = entry
            .own
            .then(|| lock(&self.waiters).remove(&seq))
            .flatten();
        entry.command = Some(command);
        entry
    }

    /// Called by the hub thread once everything up to `pos` is applied and visible.
    fn mark_applied(&self, pos: LogPos) {
        self.applied.send_if_modified(|at| {
            let newer = pos > *at;
            if newer {
                *at = pos;
            }
            newer
        });
    }

    /// Waits until this node has applied every entry the log held when called, so a read here sees every write
    /// another node acknowledged before (one Redis round trip). Gives up after a few seconds (or when Redis is
    /// down), answering from what this node has.
    async fn wait_for_log_end(&self) {
        let Ok(Some(end)) = log::last_pos(&mut self.redis.clone()).await else {
            return;
        };
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_BUDGET, applied.wait_for(|at| *at >= end)).await;
    }
}

impl Log for Node {
    fn conn_prefix(&self) -> &str {
        &self.prefix
    }

    fn shared(&self) -> bool {
        true
    }

    fn is_primary(&self) -> bool {
        Node::is_primary(self)
    }

    fn append(
        &self,
        command: Command,
        pending: Box<dyn Pending>,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.submit(command, pending))
    }

    fn append_fact(&self, command: Command) {
        self.submit_fact(command);
    }

    fn catch_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wait_for_log_end())
    }

    fn set_applied(&self, pos: LogPos) {
        self.mark_applied(pos);
    }

    fn failing(&self) -> Option<&'static str> {
        (!self.redis_reachable()).then_some("redis")
    }

    fn farewell(&self) -> Option<NodeDown> {
        Some(NodeDown {
            node: self.id.clone(),
        })
    }
}

fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout.unwrap_or(Duration::from_secs(2))))
        .set_max_delay(Duration::from_millis(1000))
}
