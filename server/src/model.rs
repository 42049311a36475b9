//! The domain's data: who is calling, stored records (users, channels, members), the writes that change them,
//! and how a user record becomes a wire `User`.

use chrono::{DateTime, SecondsFormat, Utc};
use presence_protocol::user::BUILT_IN_USER_FIELDS;
use presence_protocol::{JsonMap, User};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Who a request or connection acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A server-side token: may do everything.
    Server,
    /// A user token for this user id.
    User(String),
}

/// A change to stored data, applied by the store in the order it was made.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    SaveUser(Box<UserRecord>),
    TouchLastActive(String, DateTime<Utc>),
    /// A new channel with its members (channels are saved whole only when created).
    SaveChannel(Box<ChannelRecord>),
    /// Members joined a channel (cid): their rows, nothing else of the channel.
    AddMembers(String, Vec<MemberRecord>),
    /// Members (user ids) left a channel (cid).
    RemoveMembers(String, Vec<String>),
    /// The app's settings (`PATCH /app`).
    SaveApp(AppSettings),
    /// A webhook event into the outbox, in the commit of the change it tells of.
    Webhook(Box<WebhookEvent>),
    /// A webhook event delivered (or given up on): out of the outbox.
    WebhookDone(String),
}

/// The app's settings, stored with its records and shared by a cluster's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSettings {
    /// Where webhook events go; `None`: the `--webhook-url` flag's, if any.
    pub webhook_url: Option<String>,
}

/// The longest webhook URL accepted.
const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// An absolute `http` or `https` URL with a host, of a sane length.
pub fn check_webhook_url(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let fine = url.len() <= MAX_WEBHOOK_URL_LEN
        && host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        && !url.contains(char::is_control);
    if fine {
        Ok(())
    } else {
        Err(Error::input(format!(
            "UpdateApp failed with error: \"webhook_url must be an absolute http(s) URL of at most {MAX_WEBHOOK_URL_LEN} \
             characters\""
        )))
    }
}

/// One webhook event, as the outbox holds it until a receiver acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `X-Webhook-Id`: unique, the same on every attempt (receivers deduplicate on it).
    pub id: String,
    /// Whose event: events about one user are delivered in order.
    pub user_id: String,
    /// The event's JSON, exactly as signed and sent.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub role: String,
    pub teams: Vec<String>,
    pub invisible: bool,
    /// Client-writable fields: `name`, `image`, `language`, `privacy_settings` and custom fields, flat.
    pub data: JsonMap,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_active: Option<DateTime<Utc>>,
    /// While hidden (invisible, or presence visible to nobody): the `last_active` others see, frozen when hiding
    /// began.
    pub frozen_last_active: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub user_id: String,
    pub channel_role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    pub cid: String,
    pub channel_type: String,
    pub id: String,
    /// Custom channel data, flat.
    pub data: JsonMap,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub members: Members,
}

/// A channel's members in the order they joined (then by user id, the order storage reads them back in), each
/// also found by user id. Both are persistent maps: a copy costs O(1), and a member joining or leaving costs
/// O(log n) whatever the channel's size.
#[derive(Clone, Default)]
pub struct Members {
    in_order: imbl::OrdMap<(DateTime<Utc>, String), MemberRecord>,
    /// user id → when they joined: their key in `in_order`.
    joined: imbl::HashMap<String, DateTime<Utc>>,
}

impl Members {
    pub fn len(&self) -> usize {
        self.joined.len()
    }

    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
    }

    /// In the order they joined.
    pub fn iter(&self) -> impl Iterator<Item = &MemberRecord> {
        self.in_order.values()
    }

    pub fn contains(&self, user_id: &str) -> bool {
        self.joined.contains_key(user_id)
    }

    pub fn get(&self, user_id: &str) -> Option<&MemberRecord> {
        let joined = *self.joined.get(user_id)?;
        self.in_order.get(&(joined, user_id.to_string()))
    }

    /// Adds a member; false (and nothing changes) when the user is one already.
    pub fn insert(&mut self, member: MemberRecord) -> bool {
        if self.contains(&member.user_id) {
            return false;
        }
        self.joined
            .insert(member.user_id.clone(), member.created_at);
        self.in_order
            .insert((member.created_at, member.user_id.clone()), member);
        true
    }

    /// Removes a member, returning their record; None when the user is not one.
    pub fn remove(&mut self, user_id: &str) -> Option<MemberRecord> {
        let joined = self.joined.remove(user_id)?;
        self.in_order.remove(&(joined, user_id.to_string()))
    }
}

impl FromIterator<MemberRecord> for Members {
    fn from_iter<I: IntoIterator<Item = MemberRecord>>(members: I) -> Self {
        let mut all = Members::default();
        for m in members {
            all.insert(m);
        }
        all
    }
}

impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Stored times go out with microseconds, event times with nanoseconds, both in UTC with `Z`.
pub fn record_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn event_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Who may see a user's presence: `privacy_settings.presence.visible_to`, an own-only field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAudience {
    /// Everyone (the default, and what an absent or unreadable setting means).
    Everyone,
    /// Nobody: others read the user as offline, as if invisible, and the choice lasts across sessions.
    Nobody,
}

impl PresenceAudience {
    /// The values `visible_to` may take.
    pub const VALUES: [&'static str; 2] = ["everyone", "nobody"];

    /// The setting in a `privacy_settings` value; `None` when it names none.
    pub fn of_settings(settings: &Value) -> Option<&Value> {
        settings.get("presence")?.get("visible_to")
    }

    pub fn parse(value: &str) -> Option<PresenceAudience> {
        match value {
            "everyone" => Some(PresenceAudience::Everyone),
            "nobody" => Some(PresenceAudience::Nobody),
            _ => None,
        }
    }
}

impl UserRecord {
    /// Who may see the user's presence (`privacy_settings.presence.visible_to`).
    pub fn presence_audience(&self) -> PresenceAudience {
        self.data
            .get("privacy_settings")
            .and_then(PresenceAudience::of_settings)
            .and_then(Value::as_str)
            .and_then(PresenceAudience::parse)
            .unwrap_or(PresenceAudience::Everyone)
    }

    /// Whether others read the user as offline whatever the user does: invisible, or presence visible to nobody.
    pub fn hidden(&self) -> bool {
        self.invisible || self.presence_audience() == PresenceAudience::Nobody
    }

    pub fn new(id: &str, now: DateTime<Utc>) -> Self {
        UserRecord {
            id: id.to_string(),
            role: "user".to_string(),
            teams: Vec::new(),
            invisible: false,
            data: JsonMap::new(),
            created_at: now,
            updated_at: now,
            last_active: None,
            frozen_last_active: None,
        }
    }

    /// The user as others see them: `online` is their visible presence, invisibility and own-only fields hidden,
    /// `last_active` frozen while hidden (invisible, or presence visible to nobody).
    pub fn public_view(&self, visible_online: bool) -> User {
        let last_active = if self.hidden() {
            self.frozen_last_active
        } else {
            self.last_active
        };
        self.view(visible_online, last_active)
    }

    /// The user as their own connections see them: true connection state, `invisible`, and the own-only lists.
    pub fn own_view(&self, connected: bool) -> User {
        let mut user = self.view(connected, self.last_active);
        user.invisible = Some(self.invisible);
        user.privacy_settings = self.data.get("privacy_settings").cloned();
        user.devices = Some(Vec::new());
        user.mutes = Some(Vec::new());
        user.channel_mutes = Some(Vec::new());
        user.unread_count = Some(0);
        user.total_unread_count = Some(0);
        user.unread_channels = Some(0);
        user.unread_threads = Some(0);
        user
    }

    fn view(&self, online: bool, last_active: Option<DateTime<Utc>>) -> User {
        let text = |k: &str| self.data.get(k).and_then(Value::as_str).map(str::to_string);
        let custom = self
            .data
            .iter()
            .filter(|(k, _)| !BUILT_IN_USER_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        User {
            id: self.id.clone(),
            name: text("name"),
            image: text("image"),
            role: self.role.clone(),
            language: text("language").unwrap_or_default(),
            teams: self.teams.clone(),
            online,
            last_active: last_active.map(record_time),
            created_at: Some(record_time(self.created_at)),
            updated_at: Some(record_time(self.updated_at)),
            custom,
            ..User::default()
        }
    }
}
