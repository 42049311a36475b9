//! Watching channels: starting and stopping a watch, what the other watchers are told, and which connection a
//! REST call may subscribe.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use presence_protocol::codes::event_type;

use crate::error::Error;
use crate::model::Caller;
use crate::presence::users::UserEntry;
use crate::presence::{access, ConnId, Engine};

impl Engine {
    /// `POST /channels/{type}/{id}/stop-watching`.
    pub fn stop_watching(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        cid: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        const OP: &str = "StopWatchingChannel";
        let Some(channel) = self.channels.get(cid) else {
            return Err(Error::not_found(format!("channel {cid} does not exist")).in_operation(OP));
        };
        access::check_read(caller, channel).map_err(|e| e.in_operation(OP))?;
        if let Some(conn) = self.subscribable_conn(caller, conn_id) {
            if let Some(user_id) = self.conns.user_of(&conn).map(str::to_string) {
                self.unwatch(cid, &conn, &user_id, now);
            }
        }
        Ok(())
    }

    /// The connection a REST call may subscribe: open, and the caller's own unless the caller is the server.
    /// Anything else subscribes nothing (a call racing a reconnect is answered normally).
    pub(super) fn subscribable_conn(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
    ) -> Option<ConnId> {
        let (conn, owner) = self.conns.get(conn_id?)?;
        match caller {
            Caller::Server => Some(conn),
            Caller::User(id) if id == owner => Some(conn),
            Caller::User(_) => None,
        }
    }

    pub(super) fn watch(&mut self, cid: &str, conn: &ConnId, presence: bool, now: DateTime<Utc>) {
        let Some(user_id) = self.conns.user_of(conn).map(str::to_string) else {
            return;
        };
        let first_of_user = !self.user_watches(cid, &user_id);
        if !self.channels.watch(cid, conn, presence) {
            return;
        }
        if first_of_user && self.is_visible(&user_id) {
            self.watching_event(
                cid,
                &user_id,
                event_type::USER_WATCHING_START,
                Some(conn),
                now,
            );
        }
    }

    pub(super) fn unwatch(&mut self, cid: &str, conn: &ConnId, user_id: &str, now: DateTime<Utc>) {
        if !self.channels.unwatch(cid, conn) {
            return;
        }
        if !self.user_watches(cid, user_id) && self.is_visible(user_id) {
            self.watching_event(cid, user_id, event_type::USER_WATCHING_STOP, None, now);
        }
    }

    /// Whether any connection of the user watches the channel.
    fn user_watches(&self, cid: &str, user_id: &str) -> bool {
        self.channels
            .watchers(cid)
            .any(|(c, _)| self.conns.user_of(c) == Some(user_id))
    }

    fn is_visible(&self, user_id: &str) -> bool {
        self.users.get(user_id).is_some_and(|u| !u.rec.invisible)
    }

    /// Distinct visible users watching a channel, by id.
    pub(super) fn watching_users(&self, cid: &str) -> Vec<&UserEntry> {
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for (c, _) in self.channels.watchers(cid) {
            let Some(uid) = self.conns.user_of(c) else {
                continue;
            };
            if let Some(entry) = self.users.get(uid) {
                if !entry.rec.invisible && seen.insert(uid) {
                    users.push(entry);
                }
            }
        }
        users.sort_by(|a, b| a.rec.id.cmp(&b.rec.id));
        users
    }

    /// A user became invisible (or visible again): to other watchers they stop (or start) watching.
    pub(super) fn watching_visibility_changed(&mut self, user_id: &str, now: DateTime<Utc>) {
        let Some(entry) = self.users.get(user_id) else {
            return;
        };
        let kind = if entry.rec.invisible {
            event_type::USER_WATCHING_STOP
        } else {
            event_type::USER_WATCHING_START
        };
        let mut cids: Vec<String> = entry
            .conns()
            .iter()
            .flat_map(|c| self.channels.watched_by(c))
            .collect();
        cids.sort();
        cids.dedup();
        for cid in cids {
            self.watching_event(&cid, user_id, kind, None, now);
        }
    }
}

/// The user id of a user caller.
pub(super) fn caller_user(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Server => None,
        Caller::User(id) => Some(id),
    }
}
