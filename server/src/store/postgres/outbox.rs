//! The PostgreSQL store's app settings and webhook outbox: each outbox row names the node that committed it
//! (empty alone), which delivers it, until a survivor adopts the rows of a node found dead.

use serde_json::Value;

use super::{from_db, to_db};
use crate::model::{AppSettings, WebhookEvent};

pub(super) async fn save_app(
    tx: &deadpool_postgres::Transaction<'_>,
    app: &AppSettings,
) -> Result<(), tokio_postgres::Error> {
    let value = serde_json::to_value(app).unwrap_or(Value::Null);
    tx.execute(
        "INSERT INTO app_settings (key, value) VALUES ('app', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&value],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    event: &WebhookEvent,
    node: &str,
) -> Result<(), tokio_postgres::Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO webhook_outbox (id, user_id, body, owner) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &event.id,
            &to_db(&event.user_id),
            &to_db(&event.body),
            &node,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    let delete = tx
        .prepare_cached("DELETE FROM webhook_outbox WHERE id = $1")
        .await?;
    tx.execute(&delete, &[&id]).await?;
    Ok(())
}

/// The app's settings and every undelivered event, oldest first, as the snapshot holds them.
pub(super) async fn load(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(AppSettings, Vec<WebhookEvent>), tokio_postgres::Error> {
    let app = tx
        .query_opt("SELECT value FROM app_settings WHERE key = 'app'", &[])
        .await?
        .map(|row| row.try_get::<_, Value>(0))
        .transpose()?
        .and_then(|value| serde_json::from_value::<AppSettings>(value).ok())
        .unwrap_or_default();
    let outbox = tx
        .query(
            "SELECT id, user_id, body FROM webhook_outbox ORDER BY seq",
            &[],
        )
        .await?
        .iter()
        .map(|row| -> Result<WebhookEvent, tokio_postgres::Error> {
            Ok(WebhookEvent {
                id: row.try_get(0)?,
                user_id: from_db(row.try_get(1)?),
                body: from_db(row.try_get(2)?),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((app, outbox))
}

/// The undelivered events of node `from`, oldest first, now node `to`'s.
pub(super) async fn adopt(
    client: &deadpool_postgres::Client,
    from: &str,
    to: &str,
) -> Result<Vec<WebhookEvent>, tokio_postgres::Error> {
    let rows = client
        .query(
            "UPDATE webhook_outbox SET owner = $2 WHERE owner = $1 RETURNING seq, id, user_id, body",
            &[&from, &to],
        )
        .await?;
    let mut events: Vec<(i64, WebhookEvent)> = rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                WebhookEvent {
                    id: row.get(1),
                    user_id: from_db(row.get(2)),
                    body: from_db(row.get(3)),
                },
            )
        })
        .collect();
    events.sort_by_key(|(seq, _)| *seq);
    Ok(events.into_iter().map(|(_, event)| event).collect())
}
