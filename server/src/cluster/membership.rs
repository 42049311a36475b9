//! Which nodes are alive. Each node refreshes its key `presence:node:<id>` (expiring after [`NODE_TTL`]) every
//! [`BEAT`] and keeps its id in the set `presence:nodes`. Every node checks the others on each beat: a member
//! whose key has expired is removed from the set by whichever node gets there first (`SREM` answers 1 to one
//! of them), and that node appends `NodeDown` — so a node's connections end once cluster-wide. A node known from
//! the log but missing from the set (Redis lost its data) is declared gone once its key has stayed missing
//! for a whole [`NODE_TTL`] as seen from here, so live nodes have time to register again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

/// How often a node refreshes its key and checks the others.
const BEAT: Duration = Duration::from_secs(3);

/// A node whose key was not refreshed for this long is gone.
const NODE_TTL: Duration = Duration::from_secs(10);

const NODES_KEY: &str = "presence:nodes";

fn node_key(id: &str) -> String {
    format!("presence:node:{id}")
}

/// Refreshes node `id`'s key and membership, both at once.
pub async fn beat(redis: &mut ConnectionManager, id: &str) -> Result<(), redis::RedisError> {
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(node_key(id))
        .arg(chrono::Utc::now().timestamp_millis())
        .arg("PX")
        .arg(NODE_TTL.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(NODES_KEY)
        .arg(id)
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// What the checks work with: this node's id, the other nodes the log named (gone ones are removed by the
/// caller as their `NodeDown` entries are read), and where to say whether this node is the primary.
struct Members {
    id: String,
    known: Arc<Mutex<HashSet<String>>>,
    primary: Arc<AtomicBool>,
    missing_since: HashMap<String, Instant>,
}

/// Beats and checks the others, forever; `on_gone` appends the `NodeDown` of a node found gone.
pub async fn run(
    mut redis: ConnectionManager,
    id: String,
    known: Arc<Mutex<HashSet<String>>>,
    primary: Arc<AtomicBool>,
    writable: Arc<AtomicBool>,
    on_gone: impl Fn(String),
) {
    let mut members = Members {
        id,
        known,
        primary,
        missing_since: HashMap::new(),
    };
    let mut ticks = tokio::time::interval(BEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let beaten = beat(&mut redis, &members.id).await;
        writable.store(beaten.is_ok(), std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = beaten {
            tracing::warn!(error = %e, "cannot refresh this node's heartbeat in Redis");
            continue;
        }
        match check(&mut redis, &mut members).await {
            Ok(gone) => gone.into_iter().for_each(&on_gone),
            Err(e) => tracing::warn!(error = %e, "cannot check the other nodes' heartbeats"),
        }
    }
}

/// The nodes found gone.
async fn check(
    redis: &mut ConnectionManager,
    m: &mut Members,
) -> Result<Vec<String>, redis::RedisError> {
    let members: HashSet<String> = redis::cmd("SMEMBERS")
        .arg(NODES_KEY)
        .query_async(redis)
        .await?;
    let known: Vec<String> = m
        .known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    let mut candidates: Vec<&String> = members.iter().chain(known.iter()).collect();
    candidates.sort();
    candidates.dedup();
    let mut lowest_live = true;
    let mut gone_nodes = Vec::new();
    for other in candidates {
        if *other == m.id {
            continue;
        }
        let alive: bool = redis::cmd("EXISTS")
            .arg(node_key(other))
            .query_async(redis)
            .await?;
        if alive {
            m.missing_since.remove(other);
            if *other < m.id {
                lowest_live = false;
            }
            continue;
        }
        let gone = if members.contains(other) {
            let removed: i64 = redis::cmd("SREM")
                .arg(NODES_KEY)
                .arg(other)
                .query_async(redis)
                .await?;
            removed == 1
        } else {
            let since = *m
                .missing_since
                .entry(other.clone())
                .or_insert_with(Instant::now);
            since.elapsed() >= NODE_TTL
        };
        if gone {
            tracing::info!(node = %other, "node gone: ending its connections");
            m.missing_since.remove(other);
            m.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(other);
            gone_nodes.push(other.clone());
        }
    }
    m.primary.store(lowest_live, Ordering::Relaxed);
    Ok(gone_nodes)
}
