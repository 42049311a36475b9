//! Who follows whose presence through `queryUsers` with `presence: true`: both directions of one relation, kept
//! consistent here, in persistent maps (O(1) to copy).

use std::sync::Arc;

use imbl::{HashMap, HashSet};

use crate::presence::types::{ConnId, ConnMap, ConnSet};

#[derive(Clone, Default)]
pub(super) struct Follows {
    /// user → connections following them.
    followers: HashMap<String, ConnSet>,
    /// connection → users it follows.
    followed: ConnMap<HashSet<String>>,
}

impl Follows {
    pub fn follow(&mut self, conn: &ConnId, user_id: &str) {
        self.followers
            .entry(user_id.to_string())
            .or_default()
            .insert(Arc::clone(conn));
        self.followed
            .entry(Arc::clone(conn))
            .or_default()
            .insert(user_id.to_string());
    }

    /// A connection ended: it follows nobody any more.
    pub fn forget(&mut self, conn: &ConnId) {
        for user in self.followed.remove(conn).unwrap_or_default() {
            if let Some(set) = self.followers.get_mut(&user) {
                set.remove(conn);
                if set.is_empty() {
                    self.followers.remove(&user);
                }
            }
        }
    }

    pub fn followers_of<'a>(&'a self, user_id: &str) -> impl Iterator<Item = &'a ConnId> + 'a {
        self.followers.get(user_id).into_iter().flatten()
    }
}
