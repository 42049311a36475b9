//! Fan-out latency: watchers follow one user's presence while it flips, against presence-server or, as the
//! limit of this machine, against `broadcast-server`, a minimal tokio WebSocket broadcast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::{
    connect_user, dev_token, http_client, open, open_many, percent_encode, spawn_reader, summary,
    Error,
};

/// What presence-server sends for the flipping user, byte for byte the shape the baseline broadcasts.
fn presence_frame(online: bool) -> String {
    json!({
        "type": "user.presence.changed",
        "created_at": "2026-01-01T00:00:00.000000000Z",
        "user": {
            "id": "flipper", "role": "user", "language": "", "teams": [], "online": online,
            "last_active": "2026-01-01T00:00:00.000000Z", "created_at": "2026-01-01T00:00:00.000000Z",
            "updated_at": "2026-01-01T00:00:00.000000Z", "banned": false, "blocked_user_ids": []
        }
    })
    .to_string()
}

pub async fn fanout(
    server: String,
    api_key: String,
    watchers: usize,
    flips: usize,
    baseline: bool,
) -> Result<Value, Error> {
    let http = http_client();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let control_id = "flipper";
    let servers: Arc<Vec<String>> = Arc::new(server.split(',').map(str::to_owned).collect());
    let server = servers[0].clone();
    // The flipping side: presence-server's user (flipped by partial update, its socket read so that it answers
    // the server's pings) or the sender of the broadcast server (which does not ping).
    let mut control = if baseline {
        Some(open(&server, watchers).await?)
    } else {
        let (ws, _) = connect_user(&server, &api_key, control_id, watchers).await?;
        spawn_reader(ws, None);
        None
    };
    let started = Instant::now();
    // Each socket is read from the moment it is open: an unread one would miss the server's pings and be closed.
    open_many(watchers, 64, |n| {
        let server = servers[n % servers.len()].clone();
        let (api_key, http) = (api_key.clone(), http.clone());
        let arrivals = arrivals_tx.clone();
        async move {
            if baseline {
                spawn_reader(open(&server, n).await?, Some(arrivals));
                return Ok(());
            }
            let id = format!("watcher-{n}");
            let (ws, connection_id) = connect_user(&server, &api_key, &id, n).await?;
            spawn_reader(ws, Some(arrivals));
            let payload = json!({
                "filter_conditions": { "id": { "$in": [control_id] } }, "presence": true, "limit": 1
            });
            let answer: Value = http
                .get(format!(
                    "{server}/users?api_key={api_key}&user_id={id}&connection_id={connection_id}&payload={}",
                    percent_encode(&payload.to_string())
                ))
                .header("Authorization", dev_token(&id))
                .header("stream-auth-type", "jwt")
                .send()
                .await?
                .json()
                .await?;
            if answer["users"][0]["online"] != json!(true) {
                return Err(format!("{id}: the flipping user is not online: {answer}").into());
            }
            Ok(())
        }
    })
    .await?;
    let setup_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while arrivals.try_recv().is_ok() {}
    // For a caller that profiles the server during the flips only.
    eprintln!("flipping");

    let mut per_delivery_us = Vec::with_capacity(watchers * flips);
    let mut last_us = Vec::with_capacity(flips);
    for flip in 0..flips {
        let invisible = flip % 2 == 0;
        let t0 = Instant::now();
        if let Some(control) = control.as_mut() {
            control
                .send(Message::Text(presence_frame(!invisible).into()))
                .await?;
        } else {
            let status = http
                .patch(format!(
                    "{server}/users?api_key={api_key}&user_id={control_id}"
                ))
                .header("Authorization", dev_token(control_id))
                .header("stream-auth-type", "jwt")
                .json(
                    &json!({ "users": [{ "id": control_id, "set": { "invisible": invisible } }] }),
                )
                .send()
                .await?
                .status();
            if !status.is_success() {
                return Err(format!("partial update answered {status}").into());
            }
        }
        let mut latest = 0.0_f64;
        for _ in 0..watchers {
            let at = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await
                .map_err(|_| format!("flip {flip}: not every watcher got the event within 30 s"))?
                .ok_or("the readers stopped")?;
            let us = at.saturating_duration_since(t0).as_secs_f64() * 1e6;
            latest = latest.max(us);
            per_delivery_us.push(us);
        }
        last_us.push(latest);
        tokio::time::sleep(Duration::from_millis(300)).await;
        while arrivals.try_recv().is_ok() {}
    }
    if let Some(mut control) = control {
        let _ = control.close(None).await;
    }
    Ok(json!({
        "target": if baseline { "broadcast" } else { "presence-server" },
        "servers": servers.len(),
        "watchers": watchers,
        "flips": flips,
        "setup_secs": setup_secs,
        "frame_bytes": presence_frame(true).len(),
        "delivery_us": summary(&mut per_delivery_us),
        "last_watcher_us": summary(&mut last_us),
    }))
}

// ---- the broadcast limit -----------------------------------------------------------------------------------------

pub async fn broadcast_server(addr: SocketAddr) -> Result<Value, Error> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on ws://{}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Message>(64);
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let (mut sink, mut source) = ws.split();
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                // One encoded frame shared by every recipient (Utf8Bytes clones share the bytes).
                while let Ok(message) = rx.recv().await {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = source.next().await {
                if let Message::Text(_) = message {
                    let _ = tx.send(message);
                }
            }
        });
    }
}
