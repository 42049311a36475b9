//! The cluster log on Redis: one stream entry per state change (`n` the node that appended it, `s` its
//! sequence number there, `c` the command as JSON), appended with `XADD` and read in order with `XREAD BLOCK`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use crate::hub::log::LogPos;
use crate::presence::command::Command;

/// The stream's key.
pub const LOG_KEY: &str = "presence:log";

/// How many entries the stream keeps (about): enough for a node that starts to replay what it missed.
const LOG_MAX_LEN: u64 = 1_000_000;

/// How long one read waits for new entries before asking again.
pub const BLOCK: Duration = Duration::from_secs(2);

/// Entries read at once.
const READ_COUNT: usize = 1024;

/// A stream entry id (`<ms>-<seq>`) as a log position.
fn parse_pos(id: &str) -> Option<LogPos> {
    let (ms, seq) = id.split_once('-')?;
    Some(LogPos(ms.parse().ok()?, seq.parse().ok()?))
}

/// A log position as a stream entry id.
fn pos_id(pos: LogPos) -> String {
    let (ms, seq) = pos.parts();
    format!("{ms}-{seq}")
}

/// Most bytes a command may take as JSON in the log: twice the largest one the limits let through (an upsert
/// of 100 users with 5 KB of fields each is about 520 KB), and the size of the largest request body (1 MiB).
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// A command as stored in the log.
pub fn encode(command: &Command) -> Result<String, redis::RedisError> {
    serde_json::to_string(command).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "cannot encode a command",
            e.to_string(),
        ))
    })
}

/// Appends an encoded command (see [`encode`]).
pub async fn append(
    redis: &mut ConnectionManager,
    node: &str,
    seq: u64,
    json: &str,
) -> Result<(), redis::RedisError> {
    redis::cmd("XADD")
        .arg(LOG_KEY)
        .arg("MAXLEN")
        .arg("~")
        .arg(LOG_MAX_LEN)
        .arg("*")
        .arg("n")
        .arg(node)
        .arg("s")
        .arg(seq)
        .arg("c")
        .arg(json)
        .query_async::<String>(redis)
        .await
        .map(|_| ())
}

/// The position of the log's last entry, if it has any.
pub async fn last_pos(redis: &mut ConnectionManager) -> Result<Option<LogPos>, redis::RedisError> {
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(LOG_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(redis)
        .await?;
    Ok(reply.ids.first().and_then(|e| parse_pos(&e.id)))
}

/// An entry as stored: who appended it, its sequence number there, the command.
pub struct RawEntry {
    pub origin: String,
    pub seq: u64,
    pub command: Command,
}

/// Reads the log from its start, handing each entry to `on_entry` in order (None when it cannot be decoded),
/// forever, noting whether Redis answers in `readable` (and, when it does not, in `writable`); waits and reads
/// on while Redis is away (a restarted Redis with an empty stream gives ids past the last one read, so nothing
/// is skipped or read twice).
pub async fn read(
    mut redis: ConnectionManager,
    readable: Arc<AtomicBool>,
    writable: Arc<AtomicBool>,
    mut on_entry: impl FnMut(LogPos, Option<RawEntry>),
) {
    let mut last = LogPos::default();
    loop {
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(LOG_KEY)
            .arg(pos_id(last))
            .query_async(&mut redis)
            .await;
        readable.store(reply.is_ok(), Ordering::Relaxed);
        if reply.is_err() {
            // Redis is away: the appends' connection is broken too, and stays so until a write remakes it.
            writable.store(false, Ordering::Relaxed);
        }
        match reply {
            Ok(Some(reply)) => {
                for key in reply.keys {
                    for raw in key.ids {
                        let Some(pos) = parse_pos(&raw.id) else {
                            continue;
                        };
                        last = pos;
                        on_entry(pos, decode(&raw));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// An entry as read: who appended it, its sequence number there and its command; None when it cannot be decoded.
pub fn decode(raw: &StreamId) -> Option<RawEntry> {
    let entry = (|| {
        Some(RawEntry {
            origin: raw.get("n")?,
            seq: raw.get("s")?,
            command: serde_json::from_str(&raw.get::<String>("c")?).ok()?,
        })
    })();
    if entry.is_none() {
        tracing::warn!(id = %raw.id, "skipping a cluster log entry that cannot be decoded");
    }
    entry
}
