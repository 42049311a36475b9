//! Entries applied as a node applies the log: each decoded from its stream entry by the server's `decode`, then
//! batches of up to 1,024 (the hub thread's batch) settled by the server's `Driver` and a read view made after
//! each, on this one thread. Every run starts from the same engine (a clone: the engine's maps are persistent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use presence_server::ceiling::{
    decode, Driver, Engine, Entry, Input, LogPos, SqliteStore, StoreState, WallClock,
};
use presence_server::storage::{Stamped, Store};
use presence_server::StoreError;
use redis::streams::StreamId;
use redis::Value;

use crate::workload::Logged;

/// The hub thread's largest batch (server/src/hub/thread.rs).
const BATCH: usize = 1024;

/// Where the writes of other nodes' entries go.
#[derive(Clone, Copy, PartialEq)]
pub enum Storage {
    /// A database the nodes share: a node commits only its own entries' writes, so others' cost it none.
    Shared,
    /// A SQLite file per node (the default): every node commits every entry's writes.
    Sqlite,
}

/// A store that is never given writes (a shared database's node commits none of other nodes' entries).
struct NoWrites;

impl Store for NoWrites {
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        assert!(writes.is_empty(), "writes of another node's entry");
        Ok(())
    }
}

/// Stream entries as `XREAD` hands them to the node, from `origin`'s sequence numbers, one millisecond apart
/// from `start_ms`.
pub fn stream_entries(entries: &[Logged], start_ms: u64) -> Vec<(LogPos, StreamId)> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let pos = LogPos(start_ms + i as u64, 0);
            let field = |s: &str| Value::BulkString(s.as_bytes().to_vec());
            let map = HashMap::from([
                ("n".to_string(), field("node1")),
                ("s".to_string(), field(&(1_000_000 + i).to_string())),
                ("c".to_string(), field(&e.json)),
            ]);
            let raw = StreamId {
                id: format!("{}-{}", pos.0, pos.1),
                map,
                ..StreamId::default()
            };
            (pos, raw)
        })
        .collect()
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub entries: usize,
    pub decode_secs: f64,
    pub settle_secs: f64,
    /// Frames the engine produced, and the connections they were for (in the whole cluster).
    pub deliveries: usize,
    pub recipients: usize,
    /// Writes committed (SQLite per node).
    pub writes: u64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.entries as f64 / (self.decode_secs + self.settle_secs)
    }
}

/// A node's driver and its store.
pub struct Node {
    driver: Driver,
    store: Box<dyn Store>,
    storage: Storage,
    state: StoreState,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    pub fn new(engine: Engine, storage: Storage) -> Node {
        let state = StoreState::default();
        let (store, dir): (Box<dyn Store>, _) = match storage {
            Storage::Shared => (Box::new(NoWrites), None),
            Storage::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary folder");
                let path = dir.path().join("node.db");
                let (store, _) =
                    SqliteStore::open(path.to_str().expect("a UTF-8 path")).expect("a SQLite file");
                (Box::new(store), Some(dir))
            }
        };
        Node {
            driver: driver(engine, storage, &state),
            store,
            storage,
            state,
            _dir: dir,
        }
    }

    /// The same store (and what it holds) under a driver over `engine`.
    pub fn reset(&mut self, engine: Engine) {
        self.driver = driver(engine, self.storage, &self.state);
    }

    pub fn engine(&self) -> &Engine {
        self.driver.engine()
    }

    /// Applies `entries` in batches, timing the decoding and the settling apart.
    pub fn apply(&mut self, entries: &[(LogPos, StreamId)]) -> Run {
        let mut run = Run::default();
        let writes_before = self.writes();
        for chunk in entries.chunks(BATCH) {
            let started = Instant::now();
            let batch: Vec<Input> = chunk
                .iter()
                .map(|(pos, raw)| {
                    let command = decode(raw).map(|entry| entry.command);
                    Input::Entry(Box::new(Entry {
                        pos: *pos,
                        now: Some(pos.time()),
                        command,
                        own: false,
                        shared: true,
                        pending: None,
                    }))
                })
                .collect();
            let decoded = Instant::now();
            let settled = self.driver.settle(batch, &mut *self.store, &mut WallClock);
            // What the hub thread publishes after each batch: a new read view.
            let view = Arc::new(self.driver.engine().view());
            run.settle_secs += decoded.elapsed().as_secs_f64();
            run.decode_secs += (decoded - started).as_secs_f64();
            run.entries += chunk.len();
            run.deliveries += settled.deliveries.len();
            run.recipients += settled.deliveries.iter().map(|d| d.to.len()).sum::<usize>();
            drop(view);
        }
        run.writes = self.writes() - writes_before;
        run
    }

    fn writes(&self) -> u64 {
        self.state
            .writes_committed
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn driver(engine: Engine, storage: Storage, state: &StoreState) -> Driver {
    Driver::new(
        engine,
        "node9:",
        storage == Storage::Shared,
        state.clone(),
        Utc::now(),
    )
}

/// Applies each entry to a copy of `engine` with the command path alone, counting those the engine refuses: a
/// workload whose entries the engine refuses would measure refusals.
pub fn refusals(engine: &Engine, entries: &[(LogPos, StreamId)]) -> usize {
    let mut engine = engine.clone();
    let mut refused = 0;
    for (pos, raw) in entries {
        let Some(entry) = decode(raw) else {
            refused += 1;
            continue;
        };
        if let Err(e) = entry.command.apply(&mut engine, pos.time()) {
            if refused < 3 {
                eprintln!("refused: {e}");
            }
            refused += 1;
        }
        let _ = engine.poll_deliveries();
        let _ = engine.poll_writes();
        let _ = engine.poll_socket_orders();
    }
    refused
}

/// The median of `runs` runs of `entries` applied on `node`, each from `engine`.
pub fn median_runs(
    node: &mut Node,
    engine: &Engine,
    entries: &[(LogPos, StreamId)],
    runs: usize,
) -> (Run, Vec<f64>) {
    let mut all: Vec<Run> = (0..runs)
        .map(|_| {
            node.reset(engine.clone());
            node.apply(entries)
        })
        .collect();
    let rates: Vec<f64> = all.iter().map(Run::rate).collect();
    all.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    (all.swap_remove(all.len() / 2), rates)
}
