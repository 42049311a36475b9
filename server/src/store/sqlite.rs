//! The SQLite store: everything is loaded into memory at start; each [`Store::commit`] is one immediate
//! transaction in WAL mode with `synchronous=FULL`, so a committed batch survives power loss and a burst of
//! writes costs one fsync.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use presence_protocol::JsonMap;
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

use crate::model::{AppSettings, ChannelRecord, MemberRecord, UserRecord, WebhookEvent, Write};
use crate::store::{Snapshot, Stamped, Store, StoreError};

/// How long one commit waits for a lock held by another connection before it fails (the hub retries).
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The SQLite store: one connection, used by the hub's thread.
pub struct SqliteStore {
    conn: Connection,
}

fn open_error(e: rusqlite::Error) -> StoreError {
    StoreError::Open(Arc::new(e))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    teams TEXT NOT NULL,
    invisible INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_active TEXT,
    frozen_last_active TEXT
);
CREATE TABLE IF NOT EXISTS channels (
    cid TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    cid TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel_role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (cid, user_id)
);
CREATE TABLE IF NOT EXISTS app_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    body TEXT NOT NULL
);
";

impl SqliteStore {
    /// Opens (or creates) the database and loads it; `:memory:` keeps everything in memory for the life of the
    /// store.
    pub fn open(path: &str) -> Result<(SqliteStore, Snapshot), StoreError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory()
        } else {
            Connection::open(path)
        }
        .map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        let snapshot = load(&conn).map_err(open_error)?;
        Ok((SqliteStore { conn }, snapshot))
    }
}

impl Store for SqliteStore {
    /// One process per database: the order of its commits is the log's, positions are not needed.
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        commit(&mut self.conn, writes).map_err(commit_error)
    }
}

/// A failed commit: refused when SQLite found a value it cannot store (too big, a constraint or type broken),
/// otherwise a failure of the database (read-only, full, gone, locked).
fn commit_error(e: rusqlite::Error) -> StoreError {
    let refused = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::TooBig | ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch)
    );
    if refused {
        StoreError::Refused(Arc::new(e))
    } else {
        StoreError::Write(Arc::new(e))
    }
}

fn commit(conn: &mut Connection, writes: &[Stamped]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for Stamped { write, .. } in writes {
        match write {
            Write::SaveUser(u) => save_user(&tx, u)?,
            Write::TouchLastActive(id, at) => {
                tx.prepare_cached("UPDATE users SET last_active = ?2 WHERE id = ?1")?
                    .execute(params![id, at.to_rfc3339()])?;
            }
            Write::SaveChannel(c) => save_channel(&tx, c)?,
            Write::AddMembers(cid, members) => {
                for m in members {
                    insert_member(&tx, cid, m)?;
                }
            }
            Write::RemoveMembers(cid, user_ids) => {
                let mut delete =
                    tx.prepare_cached("DELETE FROM members WHERE cid = ?1 AND user_id = ?2")?;
                for id in user_ids {
                    delete.execute(params![cid, id])?;
                }
            }
            Write::SaveApp(app) => {
                tx.prepare_cached(
                    "INSERT INTO app_settings (key, value) VALUES ('app', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![json_text(app)])?;
            }
            Write::Webhook(event) => {
                tx.prepare_cached(
                    "INSERT INTO webhook_outbox (id, user_id, body) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
                )?
                .execute(params![event.id, event.user_id, event.body])?;
            }
            Write::WebhookDone(id) => {
                tx.prepare_cached("DELETE FROM webhook_outbox WHERE id = ?1")?
                    .execute(params![id])?;
            }
        }
    }
    tx.commit()
}

fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn save_user(tx: &rusqlite::Transaction, u: &UserRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO users (id, role, teams, invisible, data, created_at, updated_at, last_active, frozen_last_active)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(id) DO UPDATE SET role = excluded.role, teams = excluded.teams, invisible = excluded.invisible,
           data = excluded.data, updated_at = excluded.updated_at, last_active = excluded.last_active,
           frozen_last_active = excluded.frozen_last_active",
    )?
    .execute(params![
        u.id,
        u.role,
        json_text(&u.teams),
        u.invisible,
        json_text(&u.data),
        u.created_at.to_rfc3339(),
        u.updated_at.to_rfc3339(),
        u.last_active.map(|t| t.to_rfc3339()),
        u.frozen_last_active.map(|t| t.to_rfc3339()),
    ])?;
    Ok(())
}

fn save_channel(tx: &rusqlite::Transaction, c: &ChannelRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO channels (cid, type, id, data, created_by, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(cid) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
    )?
    .execute(params![
        c.cid,
        c.channel_type,
        c.id,
        json_text(&c.data),
        c.created_by,
        c.created_at.to_rfc3339(),
        c.updated_at.to_rfc3339(),
    ])?;
    tx.prepare_cached("DELETE FROM members WHERE cid = ?1")?
        .execute(params![c.cid])?;
    for m in c.members.iter() {
        insert_member(tx, &c.cid, m)?;
    }
    Ok(())
}

/// A member's row (replacing one of the same user in the channel).
fn insert_member(tx: &rusqlite::Transaction, cid: &str, m: &MemberRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO members (cid, user_id, channel_role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(cid, user_id) DO UPDATE SET channel_role = excluded.channel_role,
           created_at = excluded.created_at, updated_at = excluded.updated_at",
    )?
    .execute(params![
        cid,
        m.user_id,
        m.channel_role,
        m.created_at.to_rfc3339(),
        m.updated_at.to_rfc3339()
    ])?;
    Ok(())
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut users = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT id, role, teams, invisible, data, created_at, updated_at, last_active, frozen_last_active FROM users",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let teams: String = row.get(2)?;
        let data: String = row.get(4)?;
        let created: String = row.get(5)?;
        let updated: String = row.get(6)?;
        let last_active: Option<String> = row.get(7)?;
        let frozen: Option<String> = row.get(8)?;
        users.push(UserRecord {
            id: row.get(0)?,
            role: row.get(1)?,
            teams: serde_json::from_str(&teams).unwrap_or_default(),
            invisible: row.get(3)?,
            data: serde_json::from_str::<JsonMap>(&data).unwrap_or_default(),
            created_at: parse_time(&created),
            updated_at: parse_time(&updated),
            last_active: last_active.as_deref().map(parse_time),
            frozen_last_active: frozen.as_deref().map(parse_time),
        });
    }
    let mut channels = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT cid, type, id, data, created_by, created_at, updated_at FROM channels ORDER BY created_at",
    )?;
    let mut rows = stmt.query([])?;
    let mut members_stmt = conn.prepare(
        "SELECT user_id, channel_role, created_at, updated_at FROM members WHERE cid = ?1 ORDER BY created_at, user_id",
    )?;
    while let Some(row) = rows.next()? {
        let cid: String = row.get(0)?;
        let data: String = row.get(3)?;
        let created: String = row.get(5)?;
        let updated: String = row.get(6)?;
        let members = members_stmt
            .query_map(params![cid], |m| {
                let c: String = m.get(2)?;
                let u: String = m.get(3)?;
                Ok(MemberRecord {
                    user_id: m.get(0)?,
                    channel_role: m.get(1)?,
                    created_at: parse_time(&c),
                    updated_at: parse_time(&u),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        channels.push(ChannelRecord {
            cid: cid.clone(),
            channel_type: row.get(1)?,
            id: row.get(2)?,
            data: serde_json::from_str::<JsonMap>(&data).unwrap_or_default(),
            created_by: row.get(4)?,
            created_at: parse_time(&created),
            updated_at: parse_time(&updated),
            members,
        });
    }
    let app = conn
        .query_row(
            "SELECT value FROM app_settings WHERE key = 'app'",
            [],
            |row| row.get::<_, String>(0),
        )
        .ok()
        .and_then(|text| serde_json::from_str::<AppSettings>(&text).ok())
        .unwrap_or_default();
    let outbox = conn
        .prepare("SELECT id, user_id, body FROM webhook_outbox ORDER BY seq")?
        .query_map([], |row| {
            Ok(WebhookEvent {
                id: row.get(0)?,
                user_id: row.get(1)?,
                body: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Snapshot {
        users,
        channels,
        app,
        outbox,
    })
}
