//! The presence view of every user the client knows: enough to tell whether a fresh answer changes what a
//! presence UI shows. The full user objects live beside it in the embedding layer.

use presence_protocol::User;

use crate::core::wire::WireUser;

/// What a presence UI shows of a user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceState {
    pub online: bool,
    pub status: Option<String>,
    pub last_active: Option<String>,
}

impl PresenceState {
    /// Whether going from `self` to `next` is a presence change worth an event. `last_active` alone is not: it
    /// moves on every refresh of every connected user.
    pub fn differs_visibly(&self, next: &PresenceState) -> bool {
        self.online != next.online || self.status != next.status
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub id: String,
    pub state: PresenceState,
}

impl PresenceState {
    /// What a user object says: offline unless `online` is `true`; `status` and `last_active` when strings.
    pub fn decode(user: &impl WireUser) -> Self {
        PresenceState {
            online: user.online().unwrap_or(false),
            status: user.status(),
            last_active: user.last_active(),
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

/// Users sorted by id: lookups (every presence frame) are a binary search; inserts happen once per new user.
/// A sorted list rather than a hash map keeps the wasm bundle small.
#[derive(Debug, Default)]
pub struct UserStore {
    users: Vec<(String, PresenceState)>,
}

impl UserStore {
    /// Stores the latest state of a user; returns whether it differs visibly from what was known (a user seen for
    /// the first time counts as a change). A known user's strings are overwritten in place (`clone_from`): no
    /// allocation per presence frame.
    pub fn apply(&mut self, id: &str, state: &PresenceState) -> bool {
        match self.find(id) {
            Ok(index) => {
                let known = &mut self.users[index].1;
                let changed = known.differs_visibly(state);
                known.online = state.online;
                known.status.clone_from(&state.status);
                known.last_active.clone_from(&state.last_active);
                changed
            }
            Err(index) => {
                self.users.insert(index, (id.to_string(), state.clone()));
                true
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<PresenceState> {
        self.find(id).ok().map(|index| self.users.remove(index).1)
    }

    pub fn get(&self, id: &str) -> Option<&PresenceState> {
        self.find(id).ok().map(|index| &self.users[index].1)
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.users
            .binary_search_by(|(known, _)| known.as_str().cmp(id))
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
}
