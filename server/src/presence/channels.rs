//! Channels: their records, who is a member of which, and which connections watch which channel — each index
//! kept in both directions here, so a change never updates one side only. All of it lives in persistent maps
//! (records behind an `Arc`), so copying it costs O(1).

use std::sync::Arc;

use imbl::{HashMap, HashSet};

use crate::model::{ChannelRecord, MemberRecord};
use crate::presence::census::FieldCensus;
use crate::presence::types::{ConnId, ConnMap};

#[derive(Clone, Default)]
pub(super) struct Channels {
    records: HashMap<String, Arc<ChannelRecord>>,
    /// user id → cids of channels the user is a member of.
    member_of: HashMap<String, HashSet<String>>,
    /// cid → watching connections, with whether they asked for members' presence.
    watchers: HashMap<String, ConnMap<bool>>,
    /// connection → cids it watches.
    watching: ConnMap<HashSet<String>>,
    /// The names in channels' custom data.
    fields: FieldCensus,
}

impl Channels {
    /// Adds a channel (or replaces its record), indexing its members.
    pub fn insert(&mut self, rec: ChannelRecord) {
        self.fields.add(&rec.data);
        if let Some(old) = self.records.get(&rec.cid) {
            self.fields.remove(&old.data);
            for m in old.members.iter() {
                if let Some(set) = self.member_of.get_mut(&m.user_id) {
                    set.remove(&rec.cid);
                }
            }
        }
        for m in rec.members.iter() {
            self.member_of
                .entry(m.user_id.clone())
                .or_default()
                .insert(rec.cid.clone());
        }
        self.records.insert(rec.cid.clone(), Arc::new(rec));
    }

    /// Makes `member` a member of the channel, in the record and the user's index entry only (no other member is
    /// looked at). False when there is no such channel or the user is a member already.
    pub fn add_member(&mut self, cid: &str, member: MemberRecord) -> bool {
        let Some(rec) = self.records.get_mut(cid) else {
            return false;
        };
        if rec.members.contains(&member.user_id) {
            return false;
        }
        let user_id = member.user_id.clone();
        // Copies the record only if a reader's view still holds it: its members are a persistent map, so the
        // copy costs the custom data, not the member list.
        Arc::make_mut(rec).members.insert(member);
        self.member_of
            .entry(user_id)
            .or_default()
            .insert(cid.to_string());
        true
    }

    /// Removes `user_id` from the channel's members, in the record and the user's index entry only. Returns the
    /// member's record; None when there is no such channel or the user is not a member.
    pub fn remove_member(&mut self, cid: &str, user_id: &str) -> Option<MemberRecord> {
        let rec = self.records.get_mut(cid)?;
        if !rec.members.contains(user_id) {
            return None;
        }
        let removed = Arc::make_mut(rec).members.remove(user_id)?;
        if let Some(set) = self.member_of.get_mut(user_id) {
            set.remove(cid);
            if set.is_empty() {
                self.member_of.remove(user_id);
            }
        }
        Some(removed)
    }

    /// Whether any channel has `field` in its custom data.
    pub fn carry(&self, field: &str) -> bool {
        self.fields.carries(field)
    }

    pub fn get(&self, cid: &str) -> Option<&ChannelRecord> {
        self.records.get(cid).map(|r| &**r)
    }

    pub fn records(&self) -> impl Iterator<Item = &ChannelRecord> {
        self.records.values().map(|r| &**r)
    }

    /// Channels the user is a member of.
    pub fn memberships<'a>(&'a self, user_id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.member_of.get(user_id).into_iter().flatten()
    }

    /// `conn` watches the channel; with `presence` it also follows members' presence. A repeated watch keeps an
    /// earlier presence request. Returns false if there is no such channel.
    pub fn watch(&mut self, cid: &str, conn: &ConnId, presence: bool) -> bool {
        if !self.records.contains_key(cid) {
            return false;
        }
        let wanted = self
            .watchers
            .entry(cid.to_string())
            .or_default()
            .entry(Arc::clone(conn))
            .or_insert(false);
        *wanted |= presence;
        self.watching
            .entry(Arc::clone(conn))
            .or_default()
            .insert(cid.to_string());
        true
    }

    /// `conn` stops watching the channel. Returns whether it was watching.
    pub fn unwatch(&mut self, cid: &str, conn: &ConnId) -> bool {
        let was = match self.watchers.get_mut(cid) {
            Some(set) => {
                let was = set.remove(conn).is_some();
                if set.is_empty() {
                    self.watchers.remove(cid);
                }
                was
            }
            None => false,
        };
        if let Some(set) = self.watching.get_mut(conn) {
            set.remove(cid);
            if set.is_empty() {
                self.watching.remove(conn);
            }
        }
        was
    }

    /// Watching connections of a channel, with whether each asked for members' presence.
    pub fn watchers<'a>(&'a self, cid: &str) -> impl Iterator<Item = (&'a ConnId, bool)> + 'a {
        self.watchers
            .get(cid)
            .into_iter()
            .flatten()
            .map(|(c, presence)| (c, *presence))
    }

    /// Channels a connection watches.
    pub fn watched_by(&self, conn: &ConnId) -> Vec<String> {
        self.watching
            .get(conn)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}
