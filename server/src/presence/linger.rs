//! Watches that outlive their connection for the grace window: when a connection ends abnormally, its user keeps
//! counting as a watcher of each channel it was the user's last watch of, until the window ends or the user
//! watches that channel again (a reconnecting client re-watches its channels on its new connection). Others
//! hear `user.watching.stop` only when the window ends without that return.

use chrono::{DateTime, Utc};
use imbl::{HashMap, HashSet, OrdSet};

#[derive(Clone, Default)]
pub(super) struct LingeringWatches {
    /// user → cid → when the lingering watch ends.
    by_user: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// cid → users lingering on it.
    by_channel: HashMap<String, HashSet<String>>,
    /// (end, user, cid) of every lingering watch, earliest first.
    ends: OrdSet<(DateTime<Utc>, String, String)>,
}

impl LingeringWatches {
    /// The user keeps watching `cid` until `until` (a later call moves the end).
    pub fn start(&mut self, user_id: &str, cid: &str, until: DateTime<Utc>) {
        self.remove(user_id, cid);
        self.by_user
            .entry(user_id.to_string())
            .or_default()
            .insert(cid.to_string(), until);
        self.by_channel
            .entry(cid.to_string())
            .or_default()
            .insert(user_id.to_string());
        self.ends
            .insert((until, user_id.to_string(), cid.to_string()));
    }

    /// Forgets the lingering watch of `user_id` on `cid`. Returns whether there was one.
    pub fn remove(&mut self, user_id: &str, cid: &str) -> bool {
        let Some(cids) = self.by_user.get_mut(user_id) else {
            return false;
        };
        let Some(until) = cids.remove(cid) else {
            return false;
        };
        if cids.is_empty() {
            self.by_user.remove(user_id);
        }
        if let Some(users) = self.by_channel.get_mut(cid) {
            users.remove(user_id);
            if users.is_empty() {
                self.by_channel.remove(cid);
            }
        }
        self.ends
            .remove(&(until, user_id.to_string(), cid.to_string()));
        true
    }

    pub fn contains(&self, user_id: &str, cid: &str) -> bool {
        self.by_user
            .get(user_id)
            .is_some_and(|cids| cids.contains_key(cid))
    }

    /// Channels the user lingers on, sorted.
    pub fn channels_of(&self, user_id: &str) -> Vec<String> {
        let mut cids: Vec<String> = self
            .by_user
            .get(user_id)
            .map(|cids| cids.keys().cloned().collect())
            .unwrap_or_default();
        cids.sort();
        cids
    }

    /// Users lingering on a channel.
    pub fn users_on<'a>(&'a self, cid: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.by_channel.get(cid).into_iter().flatten()
    }

    pub fn next_end(&self) -> Option<DateTime<Utc>> {
        self.ends.get_min().map(|(until, _, _)| *until)
    }

    /// Ends the lingering watches due at `now`; returns (user, cid) of each, earliest first.
    pub fn end_due(&mut self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut ended = Vec::new();
        while let Some((until, user_id, cid)) = self.ends.get_min().cloned() {
            if until > now {
                break;
            }
            self.remove(&user_id, &cid);
            ended.push((user_id, cid));
        }
        ended
    }
}
