//! Every presence subscription the app made, so that a new connection can make them all again: the server ties
//! subscriptions to a `connection_id` and forgets them when that connection ends.

/// One subscription, as the request that re-creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// A watched channel: `POST /channels/{channel_type}/{id}/query` with `watch:true` and this presence flag.
    Channel {
        channel_type: String,
        id: String,
        presence: bool,
    },
    /// A `queryUsers` made with `presence:true`: `GET /users` with this payload (JSON, without `connection_id`).
    UserQuery { payload: String },
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    entries: Vec<Subscription>,
}

impl Subscriptions {
    /// Records a watched channel. Watching it again keeps one entry; once asked for, presence stays on until
    /// `stop_watching`.
    pub fn watch_channel(&mut self, channel_type: &str, id: &str, presence: bool) {
        for entry in &mut self.entries {
            if let Subscription::Channel {
                channel_type: t,
                id: i,
                presence: p,
            } = entry
            {
                if t == channel_type && i == id {
                    *p |= presence;
                    return;
                }
            }
        }
        self.entries.push(Subscription::Channel {
            channel_type: channel_type.to_string(),
            id: id.to_string(),
            presence,
        });
    }

    pub fn stop_watching(&mut self, channel_type: &str, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| {
            !matches!(e, Subscription::Channel { channel_type: t, id: i, .. } if t == channel_type && i == id)
        });
        before != self.entries.len()
    }

    /// Records a presence query; the same query made twice is kept once. There is no cap.
    pub fn add_user_query(&mut self, payload: String) {
        let entry = Subscription::UserQuery { payload };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub fn is_watching(&self, channel_type: &str, id: &str) -> bool {
        self.entries.iter().any(
            |e| matches!(e, Subscription::Channel { channel_type: t, id: i, .. } if t == channel_type && i == id),
        )
    }

    pub fn all(&self) -> &[Subscription] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_kept_once_and_presence_sticks() {
        let mut subs = Subscriptions::default();
        subs.watch_channel("messaging", "a", true);
        subs.watch_channel("messaging", "a", false);
        subs.watch_channel("messaging", "b", false);
        assert_eq!(subs.len(), 2);
        assert_eq!(
            subs.all()[0],
            Subscription::Channel {
                channel_type: "messaging".into(),
                id: "a".into(),
                presence: true
            }
        );
        assert!(subs.stop_watching("messaging", "a"));
        assert!(!subs.is_watching("messaging", "a"));
        assert!(subs.is_watching("messaging", "b"));
    }

    #[test]
    fn user_queries_have_no_cap() {
        let mut subs = Subscriptions::default();
        for i in 0..500 {
            subs.add_user_query(format!(
                r#"{{"filter_conditions":{{"id":"u{i}"}},"presence":true}}"#
            ));
        }
        subs.add_user_query(r#"{"filter_conditions":{"id":"u0"},"presence":true}"#.to_string());
        assert_eq!(subs.len(), 500);
    }
}
