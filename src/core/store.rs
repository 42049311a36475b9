//! The presence view of every user the client knows: enough to tell whether a fresh answer changes what a
//! presence UI shows, and whether it is older than what is known already. The full user objects live beside it
//! in the embedding layer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use presence_protocol::User;

use crate::core::wire::WireUser;

pub use crate::core::stamp::{parse_stamp, Stamp};

/// What a presence UI shows of a user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceState {
    pub online: bool,
    pub status: Option<String>,
    pub last_active: Option<String>,
    /// When this state was current: the user's `last_active`, else its `updated_at`, else the `created_at` of
    /// the event that carried it. `None` when none of them is a timestamp.
    pub since: Option<Stamp>,
}

impl PresenceState {
    /// Whether going from `self` to `next` is a presence change worth an event. `last_active` alone is not: it
    /// moves on every refresh of every connected user.
    pub fn differs_visibly(&self, next: &PresenceState) -> bool {
        self.online != next.online || self.status != next.status
    }

    /// Whether `self` is older than `known`: both carry a time and `self`'s is earlier. An equal time is not
    /// older (a status change keeps `last_active`), and a state without a time is never judged.
    pub fn is_older_than(&self, known: &PresenceState) -> bool {
        matches!((self.since, known.since), (Some(this), Some(known)) if this < known)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub id: String,
    pub state: PresenceState,
}

impl PresenceState {
    /// What a user object says: offline unless `online` is `true`; `status` and `last_active` when strings.
    /// `updated_at` is read only when `last_active` is no timestamp.
    pub fn decode(user: &impl WireUser) -> Self {
        let last_active = user.last_active();
        let since = last_active
            .as_deref()
            .and_then(parse_stamp)
            .or_else(|| user.updated_at().as_deref().and_then(parse_stamp));
        PresenceState {
            online: user.online().unwrap_or(false),
            status: user.status(),
            last_active,
            since,
        }
    }
}

impl UserPresence {
    /// A user object's presence; `None` without a string id.
    pub fn decode(user: &impl WireUser) -> Option<Self> {
        Some(UserPresence {
            id: user.id()?,
            state: PresenceState::decode(user),
        })
    }
}

impl From<&User> for UserPresence {
    fn from(user: &User) -> Self {
        UserPresence {
            id: user.id.clone(),
            state: PresenceState::decode(&user),
        }
    }
}

/// Users by id. Every presence frame looks its user up, so this is a hash table: a sorted list needs about
/// fourteen string comparisons, each a cache miss, per lookup among 10,000 users, and moves half of itself on
/// every new user.
#[derive(Debug, Default)]
pub struct UserStore {
    users: HashMap<String, PresenceState, BuildHasherDefault<Fnv>>,
}

/// FNV-1a: ids are short and chosen by the app's server, not by an attacker of this tab, so a keyed hash
/// (std's SipHash) buys nothing here and costs bundle size.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

impl UserStore {
    /// Whether `state` is older than what is known of `id` ([`PresenceState::is_older_than`]).
    pub fn is_outdated(&self, id: &str, state: &PresenceState) -> bool {
        self.get(id).is_some_and(|known| state.is_older_than(known))
    }

    /// Stores the latest state of a user; returns whether it differs visibly from what was known (a user seen for
    /// the first time counts as a change). A known user's strings are overwritten in place (`clone_from`): no
    /// allocation per presence frame.
    pub fn apply(&mut self, id: &str, state: &PresenceState) -> bool {
        self.observe(id, state, false).unwrap_or(true)
    }

    /// [`UserStore::apply`] unless `state` is older than what is known ([`UserStore::is_outdated`]), in one
    /// lookup: `None` when it is (nothing changes), else whether it differs visibly.
    pub fn apply_newer(&mut self, id: &str, state: &PresenceState) -> Option<bool> {
        self.observe(id, state, true)
    }

    fn observe(&mut self, id: &str, state: &PresenceState, newer_only: bool) -> Option<bool> {
        match self.users.get_mut(id) {
            Some(known) => {
                if newer_only && state.is_older_than(known) {
                    return None;
                }
                let changed = known.differs_visibly(state);
                known.online = state.online;
                known.status.clone_from(&state.status);
                known.last_active.clone_from(&state.last_active);
                known.since = state.since;
                Some(changed)
            }
            None => {
                self.users.insert(id.to_string(), state.clone());
                Some(true)
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<PresenceState> {
        self.users.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&PresenceState> {
        self.users.get(id)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn clear(&mut self) {
        self.users.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(online: bool, status: &str, last_active: &str) -> PresenceState {
        PresenceState {
            online,
            status: Some(status.to_string()),
            last_active: Some(last_active.to_string()),
            since: parse_stamp(last_active),
        }
    }

    #[test]
    fn only_online_and_status_changes_count() {
        let mut store = UserStore::default();
        assert!(store.apply("jack", &state(true, "here", "t1")));
        assert!(!store.apply("jack", &state(true, "here", "t2")));
        assert_eq!(
            store.get("jack").unwrap().last_active.as_deref(),
            Some("t2")
        );
        assert!(store.apply("jack", &state(false, "here", "t2")));
        assert!(store.apply("jack", &state(false, "away", "t2")));
    }

    #[test]
    fn many_users_stay_findable() {
        let mut store = UserStore::default();
        for i in (0..1000).rev() {
            assert!(store.apply(&format!("u{i}"), &state(i % 2 == 0, "s", "t")));
        }
        assert_eq!(store.len(), 1000);
        for i in 0..1000 {
            assert_eq!(store.get(&format!("u{i}")).unwrap().online, i % 2 == 0);
        }
        assert!(store.remove("u500").is_some());
        assert!(store.get("u500").is_none());
        assert_eq!(store.len(), 999);
    }

    #[test]
    fn converts_from_wire_users() {
        let user: User = serde_json::from_str(
            r#"{"id":"jack","online":true,"status":"busy","last_active":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let presence = UserPresence::from(&user);
        assert_eq!(presence.id, "jack");
        assert_eq!(presence.state, state(true, "busy", "2026-01-01T00:00:00Z"));
    }

    #[test]
    fn wire_timestamps_order_states_whatever_their_precision_and_offset() {
        let at = |text: &str| parse_stamp(text).unwrap();
        assert!(at("2026-06-24T11:44:48.171042576Z") < at("2026-06-24T11:44:48.2Z"));
        assert_eq!(at("2026-06-24T13:44:48+02:00"), at("2026-06-24T11:44:48Z"));
        assert_eq!(parse_stamp("yesterday"), None);
        assert_eq!(parse_stamp(""), None);
    }

    #[test]
    fn a_user_without_last_active_is_dated_by_updated_at() {
        let user: User = serde_json::from_str(
            r#"{"id":"jack","last_active":"soon","updated_at":"2026-01-01T00:00:01Z"}"#,
        )
        .unwrap();
        let presence = UserPresence::from(&user);
        assert_eq!(presence.state.since, parse_stamp("2026-01-01T00:00:01Z"));
    }

    #[test]
    fn only_a_strictly_older_state_is_outdated() {
        let mut store = UserStore::default();
        store.apply("jack", &state(true, "here", "2026-01-01T00:00:10Z"));
        assert!(store.is_outdated("jack", &state(false, "here", "2026-01-01T00:00:09Z")));
        assert!(!store.is_outdated("jack", &state(false, "away", "2026-01-01T00:00:10Z")));
        assert!(!store.is_outdated("jack", &state(false, "here", "not a time")));
        assert!(!store.is_outdated("jill", &state(false, "here", "2020-01-01T00:00:00Z")));
    }
}
