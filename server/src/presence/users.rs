//! Users and their presence: each user's record, open connections, grace window and the online state peers were
//! last told. The grace windows are also kept ordered by their end, so the next deadline is one lookup; the
//! count of users announced online is kept with them. Everything is held in persistent maps with each record
//! behind an `Arc`, so a copy of all users (a snapshot for readers, or the state to restore after a failed commit)
//! costs O(1) and a change after it copies only the path to what changed.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use imbl::{HashMap, OrdSet};
use presence_protocol::User;

use crate::model::UserRecord;
use crate::presence::census::FieldCensus;
use crate::presence::types::ConnId;

#[derive(Clone)]
pub(super) struct UserEntry {
    pub rec: Arc<UserRecord>,
    conns: Vec<ConnId>,
    /// Set while the offline transition waits out the grace window: when it ends.
    grace_until: Option<DateTime<Utc>>,
    /// The visible online state peers were last told.
    announced: bool,
    /// The `last_active` storage holds (as loaded, or as last written).
    stored_last_active: Option<DateTime<Utc>>,
}

impl UserEntry {
    fn new(rec: UserRecord) -> Self {
        UserEntry {
            stored_last_active: rec.last_active,
            rec: Arc::new(rec),
            conns: Vec::new(),
            grace_until: None,
            announced: false,
        }
    }

    pub fn conns(&self) -> &[ConnId] {
        &self.conns
    }

    /// Connected, or recently enough to still count as online.
    pub fn connected(&self) -> bool {
        !self.conns.is_empty() || self.grace_until.is_some()
    }

    /// Online as others see it: connected, and not hidden (invisible, or visible to nobody).
    pub fn visible_online(&self) -> bool {
        self.connected() && !self.rec.hidden()
    }

    /// The user as `viewer` sees them.
    pub fn view_for(&self, viewer: Option<&str>) -> User {
        if viewer == Some(self.rec.id.as_str()) {
            self.rec.own_view(self.connected())
        } else {
            self.rec.public_view(self.visible_online())
        }
    }
}

/// Edits `entry`'s record, keeping `fields` in step with its profile fields.
fn edit_counted<R>(
    fields: &mut FieldCensus,
    entry: &mut UserEntry,
    f: impl FnOnce(&mut UserRecord) -> R,
) -> R {
    let rec = Arc::make_mut(&mut entry.rec);
    fields.remove(&rec.data);
    let result = f(rec);
    fields.add(&rec.data);
    result
}

#[derive(Clone, Default)]
pub(super) struct Users {
    entries: HashMap<String, UserEntry>,
    /// (end, user) of every open grace window; exactly the users whose `grace_until` is set.
    graces: OrdSet<(DateTime<Utc>, String)>,
    /// Users whose `announced` is true.
    online: usize,
    /// The names in users' `data`.
    fields: FieldCensus,
}

impl Users {
    pub fn insert(&mut self, rec: UserRecord) {
        let id = rec.id.clone();
        self.fields.add(&rec.data);
        if let Some(old) = self.entries.insert(id.clone(), UserEntry::new(rec)) {
            self.fields.remove(&old.rec.data);
            // Replacing a user forgets their presence state; keep the indexes in step.
            if let Some(until) = old.grace_until {
                self.graces.remove(&(until, id));
            }
            if old.announced {
                self.online = self.online.saturating_sub(1);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&UserEntry> {
        self.entries.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &UserEntry> {
        self.entries.values()
    }

    /// The presence fields of a user's record (`last_active`, `invisible`); the profile (`data`) changes through
    /// [`Users::edit`] only, which keeps the field census.
    pub fn record_mut(&mut self, id: &str) -> Option<&mut UserRecord> {
        self.entries.get_mut(id).map(|e| Arc::make_mut(&mut e.rec))
    }

    /// Edits a user's record, profile included; None when there is no such user.
    pub fn edit<R>(&mut self, id: &str, f: impl FnOnce(&mut UserRecord) -> R) -> Option<R> {
        let entry = self.entries.get_mut(id)?;
        Some(edit_counted(&mut self.fields, entry, f))
    }

    /// [`Users::edit`], the user created first (offline, no fields) if they do not exist yet.
    pub fn edit_or_insert<R>(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut UserRecord) -> R,
    ) -> R {
        let entry = self
            .entries
            .entry(id.to_string())
            .or_insert_with(|| UserEntry::new(UserRecord::new(id, now)));
        edit_counted(&mut self.fields, entry, f)
    }

    /// Whether any user has `field` among their profile fields.
    pub fn carry(&self, field: &str) -> bool {
        self.fields.carries(field)
    }

    /// The user's `last_active` has been queued for storage with this value.
    pub fn last_active_stored(&mut self, id: &str, value: Option<DateTime<Utc>>) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.stored_last_active = value;
        }
    }

    /// Whether storage holds a `last_active` of the user older than `every` at `now` (or none), so that a
    /// refresh is due.
    pub fn last_active_refresh_due(&self, id: &str, every: TimeDelta, now: DateTime<Utc>) -> bool {
        self.entries
            .get(id)
            .is_some_and(|entry| match entry.stored_last_active {
                Some(stored) => now.signed_duration_since(stored) >= every,
                None => true,
            })
    }

    /// A connection of the user opened: any grace window ends (the user never went offline).
    pub fn add_conn(&mut self, id: &str, conn: ConnId) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.conns.push(conn);
        if let Some(until) = entry.grace_until.take() {
            self.graces.remove(&(until, id.to_string()));
        }
    }

    /// A connection of the user closed. Returns whether it was their last.
    pub fn remove_conn(&mut self, id: &str, conn: &ConnId) -> bool {
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        entry.conns.retain(|c| c != conn);
        entry.conns.is_empty()
    }

    /// The user, without connections, still counts as connected until `until`.
    pub fn start_grace(&mut self, id: &str, until: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(old) = entry.grace_until.replace(until) {
            self.graces.remove(&(old, id.to_string()));
        }
        self.graces.insert((until, id.to_string()));
    }

    /// Ends the user's grace window early, if any: they count as disconnected from now on.
    pub fn cancel_grace(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(until) = entry.grace_until.take() {
            self.graces.remove(&(until, id.to_string()));
        }
    }

    pub fn next_grace_end(&self) -> Option<DateTime<Utc>> {
        self.graces.get_min().map(|(until, _)| *until)
    }

    /// Ends the grace windows due at `now`; returns whose, earliest first.
    pub fn end_graces(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut ended = Vec::new();
        while let Some((until, _)) = self.graces.get_min() {
            if *until > now {
                break;
            }
            let Some((_, id)) = self.graces.remove_min() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.grace_until = None;
            }
            ended.push(id);
        }
        ended
    }

    /// Brings the announced presence in line with the user's state. Returns the new visible state when it
    /// flipped.
    pub fn settle(&mut self, id: &str) -> Option<bool> {
        let entry = self.entries.get_mut(id)?;
        let visible = entry.visible_online();
        if visible == entry.announced {
            return None;
        }
        entry.announced = visible;
        if visible {
            self.online += 1;
        } else {
            self.online = self.online.saturating_sub(1);
        }
        Some(visible)
    }

    pub fn online(&self) -> usize {
        self.online
    }
}
