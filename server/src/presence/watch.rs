//! Watching channels: starting and stopping a watch, what the other watchers are told, watches that outlive an
//! abnormally ended connection for the grace window, and which connection a REST call may subscribe.

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
        let Some(channel) = self.channels.get(cid) else {
            return Err(Error::not_found(format!("channel {cid} does not exist")));
        };
        access::check_read(caller, channel)?;
        if let Some(conn) = self.subscribable_conn(caller, conn_id) {
            if let Some(user_id) = self.conns.user_of(&conn).map(str::to_string) {
                // An explicit stop also ends what an earlier connection left lingering.
                let lingered = self.lingering.remove(&user_id, cid);
                if self.channels.unwatch(cid, &conn) || lingered {
                    self.watch_ended(cid, &user_id, now);
                }
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
        // Back within the grace window: the user never stopped watching, as far as others know.
        self.lingering.remove(&user_id, cid);
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

    /// Connection `conn` of `user_id`, which watched `cid`, has ended. Unless another watch of the user's
    /// remains, the user keeps watching until `linger_until` if given (an abnormal end), else stops now.
    pub(super) fn unwatch_ended(
        &mut self,
        cid: &str,
        conn: &ConnId,
        user_id: &str,
        linger_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        if !self.channels.unwatch(cid, conn) {
            return;
        }
        match linger_until {
            Some(until) if !self.user_watches(cid, user_id) => {
                self.lingering.start(user_id, cid, until)
            }
            Some(_) => {}
            None => self.watch_ended(cid, user_id, now),
        }
    }

    /// A watch of `user_id` on `cid` is over: others hear the user stop watching unless another remains.
    pub(super) fn watch_ended(&mut self, cid: &str, user_id: &str, now: DateTime<Utc>) {
        if !self.user_watches(cid, user_id) && self.is_visible(user_id) {
            self.watching_event(cid, user_id, event_type::USER_WATCHING_STOP, None, now);
        }
    }

    /// The user is offline for good: what they left lingering ends now.
    pub(super) fn end_lingering(&mut self, user_id: &str, now: DateTime<Utc>) {
        for cid in self.lingering.channels_of(user_id) {
            self.lingering.remove(user_id, &cid);
            self.watch_ended(&cid, user_id, now);
        }
    }

    /// Whether any connection of the user watches the channel, or a watch of theirs lingers on it.
    fn user_watches(&self, cid: &str, user_id: &str) -> bool {
        self.lingering.contains(user_id, cid)
            || self
                .channels
                .watchers(cid)
                .any(|(c, _)| self.conns.user_of(c) == Some(user_id))
    }

    pub(super) fn is_visible(&self, user_id: &str) -> bool {
        self.users.get(user_id).is_some_and(|u| !u.rec.hidden())
    }

    /// Distinct visible users watching a channel (lingering watches included), by id.
    pub(super) fn watching_users(&self, cid: &str) -> Vec<&UserEntry> {
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        let connected = self
            .channels
            .watchers(cid)
            .filter_map(|(c, _)| self.conns.user_of(c));
        let lingering = self.lingering.users_on(cid).map(String::as_str);
        for uid in connected.chain(lingering) {
            if let Some(entry) = self.users.get(uid) {
                if !entry.rec.hidden() && seen.insert(uid) {
                    users.push(entry);
                }
            }
        }
        users.sort_by(|a, b| a.rec.id.cmp(&b.rec.id));
        users
    }

    /// A user became hidden (invisible, or visible to nobody) or visible again: to other watchers they stop (or
    /// start) watching. Called
    /// before the presence flip when going invisible and after it when coming back, so that for others it reads
    /// like leaving (stop, offline) and arriving (online, start). A hidden user keeps no lingering watch.
    pub(super) fn watching_visibility_changed(&mut self, user_id: &str, now: DateTime<Utc>) {
        let Some(entry) = self.users.get(user_id) else {
            return;
        };
        let kind = if entry.rec.hidden() {
            event_type::USER_WATCHING_STOP
        } else {
            event_type::USER_WATCHING_START
        };
        let mut cids: Vec<String> = entry
            .conns()
            .iter()
            .flat_map(|c| self.channels.watched_by(c))
            .chain(self.lingering.channels_of(user_id))
            .collect();
        cids.sort();
        cids.dedup();
        for cid in cids {
            self.watching_event(&cid, user_id, kind, None, now);
        }
        if kind == event_type::USER_WATCHING_STOP {
            for cid in self.lingering.channels_of(user_id) {
                self.lingering.remove(user_id, &cid);
            }
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
