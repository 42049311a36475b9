//! User writes (`POST /users`, `PATCH /users`): who may write what, applying the write, invisibility, and
//! telling everyone concerned.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use presence_protocol::codes::event_type;
use presence_protocol::{JsonMap, PartialUserUpdate, User};

use crate::error::Error;
use crate::model::{Caller, UserRecord, Write};
use crate::presence::fields::{self, switch_hidden, Changed, WriteSource};
use crate::presence::watch::caller_user;
use crate::presence::{limits, Engine};

/// A user write names between 1 and 100 users.
fn check_batch(len: usize) -> Result<(), Error> {
    match len {
        0 => Err(Error::input("users must not be empty")),
        1..=100 => Ok(()),
        _ => Err(Error::input("at most 100 users per request")),
    }
}

fn source_of(caller: &Caller) -> WriteSource {
    match caller {
        Caller::Server => WriteSource::Server,
        Caller::User(_) => WriteSource::User,
    }
}

fn permit_write(caller: &Caller, user_id: &str) -> Result<(), Error> {
    match caller {
        Caller::User(id) if id != user_id => Err(Error::not_allowed(format!(
            "user {id} may not update user {user_id}"
        ))),
        _ => Ok(()),
    }
}

/// What a REST write did to a user's record before [`Engine::finish_user_write`] finishes it.
struct Written {
    /// The fields written (not `invisible`).
    changed: Changed,
    /// Whether the user was hidden before the write (invisible, or presence visible to nobody).
    was_hidden: bool,
    /// The `invisible` the write asks for.
    invisible: Option<bool>,
}

impl Engine {
    /// `POST /users`: create or replace users.
    pub fn upsert_users(
        &mut self,
        caller: &Caller,
        users: &BTreeMap<String, JsonMap>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, User>, Error> {
        let source = source_of(caller);
        check_batch(users.len())?;
        for (id, obj) in users {
            if let Some(given) = obj.get("id") {
                if given.as_str() != Some(id.as_str()) {
                    return Err(Error::input(format!(
                        "users[{id}].id does not match its key"
                    )));
                }
            }
            limits::check_user_id("user id", id)?;
            permit_write(caller, id)?;
            for (field, value) in obj {
                if field != "id" {
                    fields::check_field(id, field, Some(value), source)?;
                }
            }
            // An upsert replaces every stored field, so the result is the object's fields alone.
            let mut after = UserRecord::new(id, now);
            fields::replace_fields(&mut after, obj, source);
            limits::check_user_data(id, &after.data)?;
        }
        let mut result = BTreeMap::new();
        for (id, obj) in users {
            let created = !self.users.contains(id);
            let was_hidden = self.users.get(id).is_some_and(|e| e.rec.hidden());
            let mut changed = self
                .users
                .edit_or_insert(id, now, |rec| fields::replace_fields(rec, obj, source));
            changed.profile |= created;
            let invisible = fields::requested_invisible(obj);
            let write = Written {
                changed,
                was_hidden,
                invisible,
            };
            self.finish_user_write(caller, id, write, now, &mut result);
        }
        Ok(result)
    }

    /// `PATCH /users`: set and unset fields of existing users.
    pub fn partial_update_users(
        &mut self,
        caller: &Caller,
        updates: &[PartialUserUpdate],
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, User>, Error> {
        let source = source_of(caller);
        check_batch(updates.len())?;
        for u in updates {
            limits::check_user_id("user id", &u.id)?;
            permit_write(caller, &u.id)?;
            for (field, value) in &u.set {
                if field == "id" {
                    return Err(Error::input(format!("users[{}].id cannot be set", u.id)));
                }
                fields::check_field(&u.id, field, Some(value), source)?;
            }
            for field in &u.unset {
                if field == "id" {
                    return Err(Error::input(format!("users[{}].id cannot be unset", u.id)));
                }
                fields::check_field(&u.id, field, None, source)?;
            }
        }
        if let Some(missing) = updates.iter().find(|u| !self.users.contains(&u.id)) {
            return Err(Error::not_found(format!(
                "user {} does not exist",
                missing.id
            )));
        }
        self.check_partial_sizes(updates, source)?;
        let mut result = BTreeMap::new();
        for u in updates {
            let was_hidden = self.users.get(&u.id).is_some_and(|e| e.rec.hidden());
            let edited = self.users.edit(&u.id, |rec| {
                let mut changed = Changed::default();
                for field in &u.unset {
                    changed |= Changed::field(field, fields::unset_field(rec, field));
                }
                for (field, value) in &u.set {
                    changed |= Changed::field(field, fields::set_field(rec, field, value, source));
                }
                changed
            });
            let Some(changed) = edited else {
                continue;
            };
            let invisible = match fields::requested_invisible(&u.set) {
                Some(v) => Some(v),
                None if u.unset.iter().any(|f| f == "invisible") => Some(false),
                None => None,
            };
            let write = Written {
                changed,
                was_hidden,
                invisible,
            };
            self.finish_user_write(caller, &u.id, write, now, &mut result);
        }
        Ok(result)
    }

    /// Whether every user's data stays within the cap after the updates, applied in order (one user may be named
    /// twice) to copies of the records.
    fn check_partial_sizes(
        &self,
        updates: &[PartialUserUpdate],
        source: WriteSource,
    ) -> Result<(), Error> {
        let mut after: HashMap<&str, UserRecord> = HashMap::new();
        for u in updates {
            let rec = match after.entry(u.id.as_str()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => match self.users.get(&u.id) {
                    Some(entry) => e.insert((*entry.rec).clone()),
                    None => continue,
                },
            };
            for field in &u.unset {
                fields::unset_field(rec, field);
            }
            for (field, value) in &u.set {
                fields::set_field(rec, field, value, source);
            }
            limits::check_user_data(&u.id, &rec.data)?;
        }
        Ok(())
    }

    /// Whether the user's data stays within the cap once `details` (connect's `user_details`) are applied.
    pub(super) fn check_connect_details(
        &self,
        user_id: &str,
        details: &JsonMap,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut after = match self.users.get(user_id) {
            Some(entry) => (*entry.rec).clone(),
            None => UserRecord::new(user_id, now),
        };
        for (field, value) in details {
            fields::set_field(&mut after, field, value, WriteSource::Connect);
        }
        limits::check_user_data(user_id, &after.data)
    }

    /// After a user's fields were written (`changed`: any but `invisible`): applies invisibility, persists, and
    /// tells everyone concerned.
    ///
    /// A write that only switches invisibility, or changes only own-only fields (`privacy_settings`, among them
    /// who may see the user's presence), is not a profile change: it moves no `updated_at` and sends others no
    /// `user.updated` (either would date the switch, or tell that an offline user was secretly online). To
    /// others, going hidden (invisible, or visible to nobody) reads like leaving (stop watching, offline) and
    /// coming back like arriving (online with a fresh `last_active`, start watching); while offline it shows
    /// nothing at all.
    ///
    /// A write that changes nothing (an identical upsert, `invisible: true` again, as apps send at every start)
    /// is no write at all: nothing stored, no `updated_at` moved, no event — for an invisible user any of them
    /// would date activity nobody may see.
    ///
    /// The answer shows the user as `caller` sees them in `queryUsers`: their own view only to themselves, so a
    /// server token learns no more about an invisible user from a write than from a query.
    fn finish_user_write(
        &mut self,
        caller: &Caller,
        user_id: &str,
        write: Written,
        now: DateTime<Utc>,
        result: &mut BTreeMap<String, User>,
    ) {
        let Written {
            changed,
            was_hidden,
            invisible,
        } = write;
        let Some(entry) = self.users.get(user_id) else {
            return;
        };
        // Going invisible, a user still in the grace window of a lost connection leaves now; coming back
        // counts only real connections (an invisible user has no grace window).
        let (in_view, has_conns) = (entry.connected(), !entry.conns().is_empty());
        let Some(rec) = self.users.record_mut(user_id) else {
            return;
        };
        let flag_changed = invisible.is_some_and(|v| v != rec.invisible);
        if let Some(v) = invisible {
            rec.invisible = v;
        }
        let hidden = rec.hidden();
        let switched = (hidden != was_hidden).then(|| {
            switch_hidden(rec, if hidden { in_view } else { has_conns }, now);
            hidden
        });
        let profile_write = changed.profile;
        if profile_write {
            rec.updated_at = now;
        }
        if !changed.any() && !flag_changed && switched.is_none() {
            let entry = self.users.get(user_id);
            if let Some(entry) = entry {
                result.insert(user_id.to_string(), entry.view_for(caller_user(caller)));
            }
            return;
        }
        let stored = rec.last_active;
        self.writes.push(Write::SaveUser(Box::new(rec.clone())));
        self.users.last_active_stored(user_id, stored);
        if switched == Some(true) {
            self.users.cancel_grace(user_id);
        }
        let Some(entry) = self.users.get(user_id) else {
            return;
        };
        result.insert(user_id.to_string(), entry.view_for(caller_user(caller)));
        if profile_write {
            self.user_event(user_id, event_type::USER_UPDATED, now);
        } else {
            self.own_user_event(user_id, event_type::USER_UPDATED, now);
        }
        if switched == Some(true) {
            self.watching_visibility_changed(user_id, now);
        }
        self.settle_presence(user_id, now);
        if switched == Some(false) {
            self.watching_visibility_changed(user_id, now);
        }
    }
}
