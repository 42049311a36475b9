//! The PostgreSQL store's channels and members. A channel is saved whole when it is created; afterwards its
//! members join and leave row by row. Each row holds the cluster-log position of the write that last changed it,
//! so whatever order the nodes commit in, every row ends as the latest position made it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::{map_to_db, to_db};
use crate::model::{ChannelRecord, MemberRecord};

/// Saves a channel with its members, unless the row holds the write of a later log position (then its members
/// stay as they are too). A write without a position keeps the row's position.
pub(super) async fn save_channel(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &ChannelRecord,
    pos: Option<(i64, i64)>,
) -> Result<(), tokio_postgres::Error> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO channels (cid, type, id, data, created_by, created_at, updated_at, log_ms, log_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8::bigint, 0), COALESCE($9::bigint, 0))
             ON CONFLICT (cid) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at,
               log_ms = COALESCE($8, channels.log_ms), log_seq = COALESCE($9, channels.log_seq)
             WHERE $8::bigint IS NULL OR (channels.log_ms, channels.log_seq) <= ($8, $9)",
        )
        .await?;
    let (ms, seq) = pos.unzip();
    let saved = tx
        .execute(
            &upsert,
            &[
                &to_db(&c.cid),
                &to_db(&c.channel_type),
                &to_db(&c.id),
                &map_to_db(&c.data),
                &c.created_by.as_deref().map(to_db),
                &c.created_at,
                &c.updated_at,
                &ms,
                &seq,
            ],
        )
        .await?;
    if saved == 0 {
        return Ok(());
    }
    // Rows of a later position (a member who joined or left since, committed first by a faster node) stay.
    let clear = tx
        .prepare_cached(
            "DELETE FROM members
             WHERE cid = $1 AND ($2::bigint IS NULL OR (log_ms, log_seq) <= ($2, $3))",
        )
        .await?;
    tx.execute(&clear, &[&to_db(&c.cid), &ms, &seq]).await?;
    let members: Vec<&MemberRecord> = c.members.iter().collect();
    save_members(tx, &c.cid, &members, pos).await
}

/// Writes members' rows as joined, each unless its row holds the write of a later log position (an equal one is
/// the same entry's earlier write). All in one statement, whatever their number.
pub(super) async fn save_members(
    tx: &deadpool_postgres::Transaction<'_>,
    cid: &str,
    members: &[&MemberRecord],
    pos: Option<(i64, i64)>,
) -> Result<(), tokio_postgres::Error> {
    if members.is_empty() {
        return Ok(());
    }
    let upsert = tx
        .prepare_cached(
            "INSERT INTO members (cid, user_id, channel_role, created_at, updated_at, log_ms, log_seq, removed)
             SELECT $1, m.*, COALESCE($6::bigint, 0), COALESCE($7::bigint, 0), false
             FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS m
             ON CONFLICT (cid, user_id) DO UPDATE SET channel_role = excluded.channel_role,
               created_at = excluded.created_at, updated_at = excluded.updated_at, removed = false,
               log_ms = COALESCE($6, members.log_ms), log_seq = COALESCE($7, members.log_seq)
             WHERE $6::bigint IS NULL OR (members.log_ms, members.log_seq) <= ($6, $7)",
        )
        .await?;
    let (ms, seq) = pos.unzip();
    let user_ids: Vec<Cow<str>> = members.iter().map(|m| to_db(&m.user_id)).collect();
    let roles: Vec<Cow<str>> = members.iter().map(|m| to_db(&m.channel_role)).collect();
    let created: Vec<DateTime<Utc>> = members.iter().map(|m| m.created_at).collect();
    let updated: Vec<DateTime<Utc>> = members.iter().map(|m| m.updated_at).collect();
    tx.execute(
        &upsert,
        &[
            &to_db(cid),
            &user_ids,
            &roles,
            &created,
            &updated,
            &ms,
            &seq,
        ],
    )
    .await?;
    Ok(())
}

/// Marks members as gone, each unless its row holds the write of a later log position. Without a position (one
/// process) the rows are deleted; in a cluster they stay, marked, so that an earlier join committed later loses.
pub(super) async fn remove_members(
    tx: &deadpool_postgres::Transaction<'_>,
    cid: &str,
    user_ids: &[String],
    pos: Option<(i64, i64)>,
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<Cow<str>> = user_ids.iter().map(|id| to_db(id)).collect();
    let Some((ms, seq)) = pos else {
        let delete = tx
            .prepare_cached("DELETE FROM members WHERE cid = $1 AND user_id = ANY($2::text[])")
            .await?;
        tx.execute(&delete, &[&to_db(cid), &ids]).await?;
        return Ok(());
    };
    let mark = tx
        .prepare_cached(
            "INSERT INTO members (cid, user_id, channel_role, created_at, updated_at, log_ms, log_seq, removed)
             SELECT $1, id, '', now(), now(), $3::bigint, $4::bigint, true FROM UNNEST($2::text[]) AS id
             ON CONFLICT (cid, user_id) DO UPDATE SET removed = true, log_ms = $3, log_seq = $4
             WHERE (members.log_ms, members.log_seq) <= ($3, $4)",
        )
        .await?;
    tx.execute(&mark, &[&to_db(cid), &ids, &ms, &seq]).await?;
    Ok(())
}
