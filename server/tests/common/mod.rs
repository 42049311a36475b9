//! Test harness: starts a server on a free loopback port — in this process (the library's service behind the
//! same listener code the binary uses) unless a test is about the binary itself, then the real `presence-server`
//! process — or, for REST-only tests, builds the router in this process and sends each call through it with
//! `oneshot`; mints tokens, drives the REST API with an HTTP client and the realtime API with a native WebSocket
//! client. Every wait is bounded.
#![allow(dead_code, unused_imports)]

pub mod pg;
pub mod redis;
mod rest;
mod server;
mod tokens;
mod ws;

pub use rest::*;
pub use server::*;
pub use tokens::*;
pub use ws::*;

use std::time::Duration;

use presence_protocol::codes::event_type;
use serde_json::{json, Value};

pub const API_KEY: &str = "test-api-key";
pub const API_SECRET: &str = "test-api-secret-0123456789abcdef";
/// The constant first segment of every dev token (`{"alg":"HS256","typ":"JWT"}`).
pub const DEV_TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Default wait for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// Default window during which something must not happen.
pub const QUIET: Duration = Duration::from_millis(700);

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:x}-{n}")
}

/// Every user, by id, as a server token reads them.
pub async fn all_users(s: &Server) -> Value {
    let r = s
        .query_users(
            &Auth::Server,
            None,
            json!({ "filter_conditions": {}, "sort": [{ "field": "id", "direction": 1 }], "limit": 100 }),
        )
        .await;
    r.ok(200)["users"].clone()
}

/// Every channel with its data and sorted member ids, by cid.
pub async fn all_channels(s: &Server) -> Value {
    let r = s
        .query_channels(
            &Auth::Server,
            None,
            json!({ "filter_conditions": {}, "state": true, "limit": 30 }),
        )
        .await;
    let mut channels: Vec<Value> = r.ok(201)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut members: Vec<String> = c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["user_id"].as_str().unwrap().to_string())
                .collect();
            members.sort();
            let mut channel = c["channel"].clone();
            // Per-request fields, not stored state.
            if let Value::Object(m) = &mut channel {
                m.remove("own_capabilities");
            }
            json!({ "channel": channel, "members": members })
        })
        .collect();
    channels.sort_by_key(|c| c["channel"]["cid"].as_str().unwrap().to_string());
    Value::Array(channels)
}

/// The cids of a `queryChannels` answer, in order.
pub fn cids(body: &Value) -> Vec<String> {
    body["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("channels array in {body}"))
        .iter()
        .map(|c| c["channel"]["cid"].as_str().expect("cid").to_string())
        .collect()
}

/// Parse `name value` (or `name{labels} value`, summed) from Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(i) => &r[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// Small extension to run an assertion on a value and pass it on.
pub trait Also: Sized {
    fn also(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl<T> Also for T {}

/// Assert that a `health.check` first frame / `me` object carries everything the SDK relies on.
pub fn assert_own_user(me: &Value, id: &str) {
    assert_eq!(me["id"], id, "me.id in {me}");
    for key in ["mutes", "channel_mutes"] {
        assert!(me[key].is_array(), "me.{key} must be an array: {me}");
    }
    assert!(
        me["invisible"].is_boolean(),
        "me.invisible must be a boolean: {me}"
    );
    assert!(
        me["online"].is_boolean(),
        "me.online must be a boolean: {me}"
    );
    time(&me["last_active"]);
    time(&me["created_at"]);
    time(&me["updated_at"]);
    assert!(me["role"].is_string(), "me.role: {me}");
}

/// Assert a user object as seen by another user: complete public fields, no own-only fields.
pub fn assert_public_user(u: &Value, id: &str) {
    assert_eq!(u["id"], id, "user.id in {u}");
    assert!(u["online"].is_boolean(), "online must be a boolean: {u}");
    assert!(u["role"].is_string(), "role: {u}");
    time(&u["created_at"]);
    time(&u["updated_at"]);
    for own in [
        "invisible",
        "mutes",
        "channel_mutes",
        "devices",
        "unread_count",
        "total_unread_count",
    ] {
        assert!(
            u.get(own).is_none(),
            "own-only field `{own}` exposed on another user's object: {u}"
        );
    }
}

/// Sleep helper.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub fn is_presence_of(v: &Value, user: &str) -> bool {
    v["type"] == event_type::USER_PRESENCE_CHANGED && v["user"]["id"] == user
}

pub fn is_type_of(v: &Value, kind: &str, user: &str) -> bool {
    v["type"] == kind && v["user"]["id"] == user
}
