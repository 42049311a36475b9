//! The PostgreSQL store (`--database-url`): a database several server processes can share. Migrations run at
//! start under a transaction-scoped advisory lock, so processes starting together apply them once; the snapshot
//! is read in one repeatable-read transaction; each [`Store::commit`] is one transaction on a pooled connection.
//! Connections that broke (PostgreSQL restarted, network cut) are dropped by the pool and new ones opened on the
//! next commit, so the server recovers from an outage by itself.
//!
//! All PostgreSQL IO runs on a runtime of the store's own (one worker thread): commits from the hub's thread
//! never wait behind the sockets' tasks, and the store works the same whatever runtime its caller runs in.
//!
//! PostgreSQL text cannot hold U+0000, which the API accepts anywhere in a string; [`to_db`] escapes it (and the
//! escape character) in every string stored, [`from_db`] undoes that, so no value a client sends makes a commit
//! fail — which would fail every other write of its batch.

mod channels;
mod outbox;

use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use presence_protocol::JsonMap;
use serde_json::Value;
use tokio_postgres::{Config, IsolationLevel, NoTls};

use crate::model::{ChannelRecord, MemberRecord, Members, UserRecord, WebhookEvent, Write};
use crate::store::{Snapshot, Stamped, Store, StoreError};

/// Connections kept open: commits come from one thread, one at a time; the second serves a commit while the
/// first is being replaced.
const POOL_SIZE: usize = 2;
/// How long opening one connection may take before the commit fails (the hub retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A commit waiting longer than this for a lock (rows another process holds) fails instead of stalling the hub.
const LOCK_TIMEOUT_MS: u32 = 2000;
/// Key of the advisory lock that serializes migrations across processes.
const MIGRATION_LOCK: i64 = 0x7072_6573_656e_6365; // "presence"

/// The schema, one step per version; a database is brought to the last version at start.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        teams TEXT[] NOT NULL,
        invisible BOOLEAN NOT NULL,
        data JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        last_active TIMESTAMPTZ,
        frozen_last_active TIMESTAMPTZ
    );
    CREATE TABLE channels (
        cid TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        data JSONB NOT NULL,
        created_by TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE members (
        cid TEXT NOT NULL REFERENCES channels (cid) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        channel_role TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (cid, user_id)
    );
    CREATE INDEX members_by_user ON members (user_id);",
    ),
    // The cluster-log position of the write a user or channel (with its members) holds: an older one is refused.
    (
        2,
        "ALTER TABLE users ADD COLUMN log_ms BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE channels ADD COLUMN log_ms BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;",
    ),
    // The app's settings, and the webhook outbox: events committed with the change they tell of, deleted once
    // delivered.
    (
        3,
        "CREATE TABLE app_settings (key TEXT PRIMARY KEY, value JSONB NOT NULL);
        CREATE TABLE webhook_outbox (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            body TEXT NOT NULL
        );",
    ),
    // Whose webhook events: the node that committed them delivers them, and a survivor adopts a dead node's.
    (
        4,
        "ALTER TABLE webhook_outbox ADD COLUMN owner TEXT NOT NULL DEFAULT '';
        CREATE INDEX webhook_outbox_by_owner ON webhook_outbox (owner, seq);",
    ),
    // Members join and leave one at a time: each row holds the log position of the write that last changed it,
    // and a member who left stays as a row marked `removed`, so that an earlier join committed later by a slower
    // node cannot bring them back.
    (
        5,
        "ALTER TABLE members ADD COLUMN log_ms BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN removed BOOLEAN NOT NULL DEFAULT false;",
    ),
];

/// The PostgreSQL store: a small connection pool on a runtime of its own.
pub struct PostgresStore {
    pool: Pool,
    io: Io,
    /// This process's node id in a cluster (empty alone): the owner of the webhook events it commits.
    node: String,
}

/// The store's runtime. Dropped without waiting, so dropping the store is safe on any thread, async or not.
struct Io(Option<tokio::runtime::Runtime>);

impl Io {
    /// Runs `work` on the store's runtime and waits for it; callable from any thread, including a runtime's.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let runtime = self.0.as_ref()?;
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().ok()
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn shared_error(e: impl StdError + Send + Sync + 'static) -> Arc<dyn StdError + Send + Sync> {
    Arc::new(e)
}

fn open_error(e: impl StdError + Send + Sync + 'static) -> StoreError {
    StoreError::Open(shared_error(e))
}

fn write_error(e: impl StdError + Send + Sync + 'static) -> StoreError {
    StoreError::Write(shared_error(e))
}

/// A failed commit: refused when PostgreSQL answered that a value cannot be stored (SQLSTATE classes 22 data
/// exception, 23 integrity constraint, 54 program limit — a key too large for its index), otherwise a failure
/// of the database or of the way to it.
fn commit_error(e: tokio_postgres::Error) -> StoreError {
    let refused = e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
    });
    if refused {
        StoreError::Refused(shared_error(e))
    } else {
        write_error(e)
    }
}

/// A failure of the store's own making (not PostgreSQL's).
#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Failure {}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or libpq's `key=value` form), brings
    /// the schema up to date and loads everything.
    pub fn open(url: &str) -> Result<(PostgresStore, Snapshot), StoreError> {
        let mut config = Config::from_str(url).map_err(open_error)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.options(format!("-c lock_timeout={LOCK_TIMEOUT_MS}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("presence-postgres")
            .enable_all()
            .build()
            .map_err(open_error)?;
        let io = Io(Some(runtime));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .build()
            .map_err(open_error)?;
        let start = {
            let pool = pool.clone();
            async move {
                let mut client = pool.get().await.map_err(open_error)?;
                migrate(&mut client).await?;
                load(&mut client).await.map_err(open_error)
            }
        };
        let snapshot = io
            .run(start)
            .unwrap_or_else(|| Err(open_error(Failure("the store's runtime stopped".into()))))?;
        let store = PostgresStore {
            pool,
            io,
            node: String::new(),
        };
        Ok((store, snapshot))
    }

    /// `url` without its password, for logs and error messages.
    pub fn describe(url: &str) -> String {
        match Config::from_str(url) {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                let port = c.get_ports().first().copied().unwrap_or(5432);
                format!(
                    "postgres://{}@{}:{port}/{}",
                    c.get_user().unwrap_or(""),
                    hosts.join(","),
                    c.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgres (unreadable --database-url)".to_string(),
        }
    }
}

impl Store for PostgresStore {
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let writes = writes.to_vec();
        let node = self.node.clone();
        self.io
            .run(async move {
                let mut client = pool.get().await.map_err(write_error)?;
                commit(&mut client, &writes, &node)
                    .await
                    .map_err(commit_error)
            })
            .unwrap_or_else(|| Err(write_error(Failure("the store's runtime stopped".into()))))
    }

    fn shared(&self) -> bool {
        true
    }

    fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }

    fn adopt_outbox(&mut self, node: &str) -> Result<Vec<WebhookEvent>, StoreError> {
        let pool = self.pool.clone();
        let (from, to) = (node.to_string(), self.node.clone());
        self.io
            .run(async move {
                let client = pool.get().await.map_err(write_error)?;
                outbox::adopt(&client, &from, &to)
                    .await
                    .map_err(commit_error)
            })
            .unwrap_or_else(|| Err(write_error(Failure("the store's runtime stopped".into()))))
    }
}

/// Brings the schema to the last version, holding the migration lock until the transaction ends.
async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(open_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(open_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS presence_schema (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(open_error)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM presence_schema", &[])
        .await
        .map_err(open_error)?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(open_error(Failure(format!(
            "the database's schema is version {current}, newer than this server's ({latest})"
        ))));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(open_error)?;
        tx.execute(
            "INSERT INTO presence_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(open_error)?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await.map_err(open_error)
}

async fn commit(
    client: &mut deadpool_postgres::Client,
    writes: &[Stamped],
    node: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let mut touches: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for Stamped { write, pos } in writes {
        let pos = pos.map(db_pos);
        match write {
            // A run of stamps (pings, mostly) goes out as one statement, the last stamp of each user winning.
            Write::TouchLastActive(id, at) => {
                touches.insert(id, *at);
                continue;
            }
            Write::SaveUser(u) => {
                touch_last_active(&tx, &mut touches).await?;
                save_user(&tx, u, pos).await?;
            }
            Write::SaveChannel(c) => {
                touch_last_active(&tx, &mut touches).await?;
                channels::save_channel(&tx, c, pos).await?;
            }
            Write::AddMembers(cid, members) => {
                let members: Vec<&MemberRecord> = members.iter().collect();
                channels::save_members(&tx, cid, &members, pos).await?;
            }
            Write::RemoveMembers(cid, user_ids) => {
                channels::remove_members(&tx, cid, user_ids, pos).await?
            }
            Write::SaveApp(app) => outbox::save_app(&tx, app).await?,
            Write::Webhook(event) => outbox::insert(&tx, event, node).await?,
            Write::WebhookDone(id) => outbox::delete(&tx, id).await?,
        }
    }
    touch_last_active(&tx, &mut touches).await?;
    tx.commit().await
}

/// A log position as stored (two `BIGINT`s; a Redis stream id fits, anything larger is kept at the maximum).
fn db_pos((ms, seq): (u64, u64)) -> (i64, i64) {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    (clamp(ms), clamp(seq))
}

/// Stamps `last_active` of every user in `touches` (never moving it back: another node may have stamped it
/// later), and empties it.
async fn touch_last_active(
    tx: &deadpool_postgres::Transaction<'_>,
    touches: &mut HashMap<&str, DateTime<Utc>>,
) -> Result<(), tokio_postgres::Error> {
    if touches.is_empty() {
        return Ok(());
    }
    let update = tx
        .prepare_cached(
            "UPDATE users SET last_active = GREATEST(users.last_active, stamp.at)
             FROM UNNEST($1::text[], $2::timestamptz[]) AS stamp (id, at) WHERE users.id = stamp.id",
        )
        .await?;
    let (ids, stamps): (Vec<Cow<str>>, Vec<DateTime<Utc>>) =
        touches.drain().map(|(id, at)| (to_db(id), at)).unzip();
    tx.execute(&update, &[&ids, &stamps]).await?;
    Ok(())
}

/// Saves a user, unless the row holds the write of a later log position (an equal one is the same entry's
/// earlier write, which this one follows). A write without a position keeps the row's position.
async fn save_user(
    tx: &deadpool_postgres::Transaction<'_>,
    u: &UserRecord,
    pos: Option<(i64, i64)>,
) -> Result<(), tokio_postgres::Error> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO users (id, role, teams, invisible, data, created_at, updated_at, last_active,
                frozen_last_active, log_ms, log_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10::bigint, 0), COALESCE($11::bigint, 0))
             ON CONFLICT (id) DO UPDATE SET role = excluded.role, teams = excluded.teams,
               invisible = excluded.invisible, data = excluded.data, updated_at = excluded.updated_at,
               last_active = excluded.last_active, frozen_last_active = excluded.frozen_last_active,
               log_ms = COALESCE($10, users.log_ms), log_seq = COALESCE($11, users.log_seq)
             WHERE $10::bigint IS NULL OR (users.log_ms, users.log_seq) <= ($10, $11)",
        )
        .await?;
    let (ms, seq) = pos.unzip();
    let teams: Vec<Cow<str>> = u.teams.iter().map(|t| to_db(t)).collect();
    tx.execute(
        &upsert,
        &[
            &to_db(&u.id),
            &to_db(&u.role),
            &teams,
            &u.invisible,
            &map_to_db(&u.data),
            &u.created_at,
            &u.updated_at,
            &u.last_active,
            &u.frozen_last_active,
            &ms,
            &seq,
        ],
    )
    .await?;
    Ok(())
}

/// Everything stored, read in one consistent snapshot of the database.
async fn load(client: &mut deadpool_postgres::Client) -> Result<Snapshot, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let users = tx
        .query(
            "SELECT id, role, teams, invisible, data, created_at, updated_at, last_active, frozen_last_active
             FROM users",
            &[],
        )
        .await?
        .iter()
        .map(|row| -> Result<UserRecord, tokio_postgres::Error> {
            let teams: Vec<String> = row.try_get(2)?;
            Ok(UserRecord {
                id: from_db(row.try_get(0)?),
                role: from_db(row.try_get(1)?),
                teams: teams.into_iter().map(from_db).collect(),
                invisible: row.try_get(3)?,
                data: map_from_db(row.try_get(4)?),
                created_at: row.try_get(5)?,
                updated_at: row.try_get(6)?,
                last_active: row.try_get(7)?,
                frozen_last_active: row.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut members: HashMap<String, Members> = HashMap::new();
    for row in tx
        .query(
            "SELECT cid, user_id, channel_role, created_at, updated_at FROM members WHERE NOT removed
             ORDER BY cid, created_at, user_id",
            &[],
        )
        .await?
    {
        members
            .entry(row.try_get(0)?)
            .or_default()
            .insert(MemberRecord {
                user_id: from_db(row.try_get(1)?),
                channel_role: from_db(row.try_get(2)?),
                created_at: row.try_get(3)?,
                updated_at: row.try_get(4)?,
            });
    }
    let channels = tx
        .query(
            "SELECT cid, type, id, data, created_by, created_at, updated_at FROM channels
             ORDER BY created_at, cid",
            &[],
        )
        .await?
        .iter()
        .map(|row| -> Result<ChannelRecord, tokio_postgres::Error> {
            let stored_cid: String = row.try_get(0)?;
            let created_by: Option<String> = row.try_get(4)?;
            Ok(ChannelRecord {
                members: members.remove(&stored_cid).unwrap_or_default(),
                cid: from_db(stored_cid),
                channel_type: from_db(row.try_get(1)?),
                id: from_db(row.try_get(2)?),
                data: map_from_db(row.try_get(3)?),
                created_by: created_by.map(from_db),
                created_at: row.try_get(5)?,
                updated_at: row.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (app, outbox) = outbox::load(&tx).await?;
    tx.commit().await?;
    Ok(Snapshot {
        users,
        channels,
        app,
        outbox,
    })
}

/// Marks an escaped character in stored text: U+FFFF is a noncharacter, absent from any real text.
const ESCAPE: char = '\u{FFFF}';

/// `s` as stored: U+0000 becomes ESCAPE `0`, ESCAPE itself is doubled.
fn to_db(s: &str) -> Cow<'_, str> {
    if !s.contains(['\0', ESCAPE]) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for ch in s.chars() {
        match ch {
            '\0' => {
                out.push(ESCAPE);
                out.push('0');
            }
            ESCAPE => {
                out.push(ESCAPE);
                out.push(ESCAPE);
            }
            ch => out.push(ch),
        }
    }
    Cow::Owned(out)
}

/// Undoes [`to_db`].
fn from_db(s: String) -> String {
    if !s.contains(ESCAPE) {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == ESCAPE {
            match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push(ESCAPE),
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn map_to_db(map: &JsonMap) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (to_db(k).into_owned(), json_to_db(v)))
            .collect(),
    )
}

fn json_to_db(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(to_db(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(json_to_db).collect()),
        Value::Object(map) => map_to_db(map),
        other => other.clone(),
    }
}

fn map_from_db(v: Value) -> JsonMap {
    match json_from_db(v) {
        Value::Object(map) => map,
        _ => JsonMap::new(),
    }
}

fn json_from_db(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(from_db(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(json_from_db).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (from_db(k), json_from_db(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips_nul_and_the_escape_character() {
        for s in [
            "",
            "plain",
            "a\0b",
            "\0",
            "\u{FFFF}",
            "\u{FFFF}0",
            "x\u{FFFF}\0\u{FFFF}\u{FFFF}y",
        ] {
            let stored = to_db(s);
            assert!(!stored.contains('\0'), "{s:?} stored as {stored:?}");
            assert_eq!(from_db(stored.into_owned()), s);
        }
        assert!(matches!(to_db("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn stored_json_round_trips_nul_in_keys_and_values() {
        let data: JsonMap = serde_json::from_str(
            r#"{"name":"a\u0000b","k\u0000":["\u0000",{"\uFFFF":"\uFFFF\u0000"}],"n":1}"#,
        )
        .unwrap();
        let stored = map_to_db(&data);
        assert!(!stored.to_string().contains("\\u0000"), "{stored}");
        assert_eq!(map_from_db(stored), data);
    }
}
