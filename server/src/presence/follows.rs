//! Who follows whose presence through `queryUsers` with `presence: true`: both directions of one relation, kept
//! consistent here, in persistent maps (O(1) to copy), and how many users one connection may follow.

use std::sync::Arc;

use imbl::{HashMap, HashSet};

use crate::error::Error;
use crate::presence::types::{ConnId, ConnMap, ConnSet};

#[derive(Clone, Default)]
pub(super) struct Follows {
    /// user → connections following them.
    followers: HashMap<String, ConnSet>,
    /// connection → users it follows.
    followed: ConnMap<HashSet<String>>,
    /// (connection, user) pairs: what the server holds for presence subscriptions.
    pairs: usize,
}

impl Follows {
    pub fn follow(&mut self, conn: &ConnId, user_id: &str) {
        self.followers
            .entry(user_id.to_string())
            .or_default()
            .insert(Arc::clone(conn));
        let before = self
            .followed
            .entry(Arc::clone(conn))
            .or_default()
            .insert(user_id.to_string());
        if before.is_none() {
            self.pairs += 1;
        }
    }

    /// (connection, followed user) pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Whether `conn` may follow `ids` too when a connection may follow `max` users: each entry costs memory
    /// for as long as the connection lives, so the whole request is refused (nothing followed) rather than cut
    /// short at the cap. Users it follows already do not count again.
    pub fn check_room(&self, conn: &ConnId, ids: &[String], max: usize) -> Result<(), Error> {
        let followed = self.followed.get(conn);
        let mut new: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !followed.is_some_and(|set| set.contains(*id)))
            .collect();
        new.sort_unstable();
        new.dedup();
        let total = followed.map_or(0, |set| set.len()) + new.len();
        if total > max {
            return Err(Error::input(format!(
                "this connection would follow the presence of {total} users, over the limit of {max} per \
                 connection (max_follows_per_connection)"
            )));
        }
        Ok(())
    }

    /// A connection ended: it follows nobody any more.
    pub fn forget(&mut self, conn: &ConnId) {
        let followed = self.followed.remove(conn).unwrap_or_default();
        self.pairs -= followed.len();
        for user in followed {
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
