//! The app's settings and what the engine tells webhooks: each user-level event peers would see (after the same
//! rules: real flips only, invisible reads as offline, nothing of an invisible session) goes into the outbox as a
//! write of the operation that caused it, so it is committed with the change or not at all.

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::model::{check_webhook_url, AppSettings, Caller, WebhookEvent, Write};
use crate::presence::Engine;

impl Engine {
    /// The settings loaded at start.
    pub fn restore_app(&mut self, app: AppSettings) {
        self.app = app;
    }

    /// The app's settings as stored.
    pub fn app(&self) -> &AppSettings {
        &self.app
    }

    /// Where webhook events go: the app's `webhook_url`, else the `--webhook-url` flag's; `None`: nowhere, and
    /// nothing goes into the outbox.
    pub fn webhook_url(&self) -> Option<&str> {
        self.app
            .webhook_url
            .as_deref()
            .or(self.config.webhook_url.as_deref())
    }

    /// `PATCH /app`: `webhook_url` set (an empty string clears it, so the flag's applies again). Server tokens
    /// only.
    pub fn update_app(
        &mut self,
        caller: &Caller,
        webhook_url: Option<&str>,
        _now: DateTime<Utc>,
    ) -> Result<AppSettings, Error> {
        if *caller != Caller::Server {
            return Err(Error::not_allowed(
                "UpdateApp failed with error: \"only a server-side token may change the app's settings\"",
            ));
        }
        if let Some(url) = webhook_url {
            let url = url.trim();
            if url.is_empty() {
                self.app.webhook_url = None;
            } else {
                check_webhook_url(url)?;
                self.app.webhook_url = Some(url.to_string());
            }
            self.writes.push(Write::SaveApp(self.app.clone()));
        }
        Ok(self.app.clone())
    }

    /// Puts the event `body` about `user_id` into the outbox when webhooks are on and want `kind`. Its id is
    /// given by whoever commits it (the engine has no randomness).
    pub(super) fn webhook(&mut self, user_id: &str, kind: &str, body: &str) {
        if self.webhook_url().is_none() || !self.config.webhook_events.iter().any(|k| k == kind) {
            return;
        }
        self.writes.push(Write::Webhook(Box::new(WebhookEvent {
            id: String::new(),
            user_id: user_id.to_string(),
            body: body.to_string(),
        })));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeZone;
    use presence_protocol::{JsonMap, PartialUserUpdate};
    use serde_json::{json, Value};

    use super::*;
    use crate::presence::{distinct_channel_key, Config, Ending};

    const GRACE_MS: i64 = 3000;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn engine(url: Option<&str>) -> Engine {
        let config = Config {
            offline_grace: Duration::from_millis(GRACE_MS as u64),
            watch_implies_presence: false,
            max_connections_per_user: 5,
            max_channels_per_user: 10,
            last_active_refresh: Duration::from_secs(900),
            max_follows_per_connection: 100,
            distinct_channel_key: distinct_channel_key("a secret"),
            webhook_url: url.map(str::to_string),
            webhook_events: vec!["user.presence.changed".into(), "user.updated".into()],
        };
        let mut engine = Engine::new(config, Vec::new(), Vec::new());
        let users = [("alice".to_string(), JsonMap::new())]
            .into_iter()
            .collect();
        engine.upsert_users(&Caller::Server, &users, at(0)).unwrap();
        let _ = engine.poll_writes();
        engine
    }

    /// The webhook events of the writes so far: (type, user id, online, status).
    fn hooks(engine: &mut Engine) -> Vec<(String, String, bool, Value)> {
        engine
            .poll_writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::Webhook(event) => Some(event),
                _ => None,
            })
            .map(|event| {
                let body: Value = serde_json::from_str(&event.body).unwrap();
                assert_eq!(body["user"]["id"], json!(event.user_id));
                (
                    body["type"].as_str().unwrap().to_string(),
                    event.user_id.clone(),
                    body["user"]["online"].as_bool().unwrap(),
                    body["user"]["status"].clone(),
                )
            })
            .collect()
    }

    fn connect(engine: &mut Engine, conn: &str, now: DateTime<Utc>) -> Arc<str> {
        let conn: Arc<str> = Arc::from(conn);
        engine
            .connect(Arc::clone(&conn), "alice", &JsonMap::new(), &[], now)
            .unwrap();
        conn
    }

    fn update(engine: &mut Engine, set: Value, now: DateTime<Utc>) {
        let set: JsonMap = serde_json::from_value(set).unwrap();
        let update = PartialUserUpdate {
            id: "alice".into(),
            set,
            unset: Vec::new(),
        };
        engine
            .partial_update_users(&Caller::Server, &[update], now)
            .unwrap();
    }

    fn presence(kind_online: bool) -> (String, String, bool) {
        ("user.presence.changed".into(), "alice".into(), kind_online)
    }

    fn without_status(events: Vec<(String, String, bool, Value)>) -> Vec<(String, String, bool)> {
        events.into_iter().map(|(t, u, o, _)| (t, u, o)).collect()
    }

    #[test]
    fn one_event_per_user_flip_not_per_connection_and_none_for_a_reconnect_within_the_grace() {
        let mut e = engine(Some("http://127.0.0.1:9/hook"));
        let first = connect(&mut e, "n:1", at(10));
        assert_eq!(without_status(hooks(&mut e)), vec![presence(true)]);
        let second = connect(&mut e, "n:2", at(20));
        e.disconnect(&first, Ending::Abnormal, at(30));
        assert!(hooks(&mut e).is_empty(), "a second tab is the same user");
        e.disconnect(&second, Ending::Abnormal, at(40));
        let _back = connect(&mut e, "n:3", at(40 + GRACE_MS / 2));
        e.handle_timeout(at(40 + GRACE_MS + 10));
        assert!(hooks(&mut e).is_empty(), "back within the grace");
    }

    #[test]
    fn the_last_connection_ending_sends_offline_after_the_grace_or_at_once_when_explicit() {
        let mut e = engine(Some("http://127.0.0.1:9/hook"));
        let conn = connect(&mut e, "n:1", at(0));
        let _ = hooks(&mut e);
        e.disconnect(&conn, Ending::Abnormal, at(10));
        e.handle_timeout(at(10 + GRACE_MS - 1));
        assert!(hooks(&mut e).is_empty());
        e.handle_timeout(at(10 + GRACE_MS));
        assert_eq!(without_status(hooks(&mut e)), vec![presence(false)]);
        let conn = connect(&mut e, "n:2", at(10_000));
        let _ = hooks(&mut e);
        e.disconnect(&conn, Ending::Explicit, at(10_010));
        assert_eq!(without_status(hooks(&mut e)), vec![presence(false)]);
    }

    #[test]
    fn invisible_reads_as_offline_and_an_invisible_session_sends_nothing() {
        let mut e = engine(Some("http://127.0.0.1:9/hook"));
        connect(&mut e, "n:1", at(0));
        let _ = hooks(&mut e);
        update(&mut e, json!({ "status": "lunch" }), at(10));
        assert_eq!(
            hooks(&mut e),
            vec![("user.updated".into(), "alice".into(), true, json!("lunch"))]
        );
        update(&mut e, json!({ "invisible": true }), at(20));
        let events = hooks(&mut e);
        assert!(
            events.contains(&(
                "user.presence.changed".into(),
                "alice".into(),
                false,
                json!("lunch")
            )),
            "{events:?}"
        );
        assert!(events.iter().all(|(_, _, online, _)| !online), "{events:?}");
        assert!(
            events.iter().all(|(kind, ..)| kind != "user.updated"),
            "{events:?}"
        );
        update(&mut e, json!({ "status": "secret plans" }), at(30));
        assert!(hooks(&mut e).is_empty(), "nothing of an invisible session");
    }

    #[test]
    fn presence_visible_to_nobody_reads_as_offline_while_the_profile_still_reaches_the_receiver() {
        let mut e = engine(Some("http://127.0.0.1:9/hook"));
        connect(&mut e, "n:1", at(0));
        let _ = hooks(&mut e);
        let nobody = json!({ "privacy_settings": { "presence": { "visible_to": "nobody" } } });
        update(&mut e, nobody, at(10));
        // Offline, and no update: the setting is the user's own.
        assert_eq!(without_status(hooks(&mut e)), vec![presence(false)]);
        update(&mut e, json!({ "status": "away" }), at(20));
        assert_eq!(
            hooks(&mut e),
            vec![("user.updated".into(), "alice".into(), false, json!("away"))]
        );
        let everyone = json!({ "privacy_settings": { "presence": { "visible_to": "everyone" } } });
        update(&mut e, everyone, at(30));
        assert_eq!(without_status(hooks(&mut e)), vec![presence(true)]);
    }

    #[test]
    fn no_url_no_outbox_and_patch_app_turns_webhooks_on_and_off() {
        let mut e = engine(None);
        connect(&mut e, "n:1", at(0));
        assert!(hooks(&mut e).is_empty());
        let user = Caller::User("alice".into());
        assert!(e.update_app(&user, Some("http://x/h"), at(5)).is_err());
        assert!(e
            .update_app(&Caller::Server, Some("ftp://x"), at(5))
            .is_err());
        let app = e
            .update_app(&Caller::Server, Some("http://127.0.0.1:9/hook"), at(5))
            .unwrap();
        assert_eq!(app.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
        assert!(e
            .poll_writes()
            .iter()
            .any(|w| matches!(w, Write::SaveApp(a) if *a == app)));
        update(&mut e, json!({ "status": "on" }), at(10));
        assert_eq!(hooks(&mut e).len(), 1);
        e.update_app(&Caller::Server, Some(""), at(20)).unwrap();
        assert_eq!(e.webhook_url(), None);
        update(&mut e, json!({ "status": "off" }), at(30));
        assert!(hooks(&mut e).is_empty());
    }
}
