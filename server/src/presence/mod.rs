//! The presence engine: users, their connections, channels, and who follows whose presence — with no IO and no
//! clock. Every operation takes `now`; the one deadline kind (the offline grace window) is data, read with
//! [`Engine::poll_timeout`] and acted on with [`Engine::handle_timeout`]. What an operation causes is queued for
//! the caller to drain: [`Delivery`]s (which connections get which frame, in order) and storage [`Write`]s.

mod channels;
mod connections;
mod events;
mod fields;
pub(crate) mod filter;
mod follows;
mod get_or_create;
mod queries;
mod types;
mod users;
mod watch;
mod writes;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::event_type;
use presence_protocol::JsonMap;

use crate::error::{Error, ErrorKind};
use crate::model::{ChannelRecord, UserRecord, Write};

use self::channels::Channels;
use self::connections::Connections;
use self::fields::WriteSource;
use self::follows::Follows;
pub use self::types::{Config, ConnId, Delivery, Ending};
use self::users::Users;

pub struct Engine {
    config: Config,
    users: Users,
    conns: Connections,
    channels: Channels,
    follows: Follows,
    deliveries: Vec<Delivery>,
    writes: Vec<Write>,
}

impl Engine {
    /// An engine over stored users and channels, nobody connected.
    pub fn new(config: Config, users: Vec<UserRecord>, channels: Vec<ChannelRecord>) -> Engine {
        let mut engine = Engine {
            config,
            users: Users::default(),
            conns: Connections::default(),
            channels: Channels::default(),
            follows: Follows::default(),
            deliveries: Vec::new(),
            writes: Vec::new(),
        };
        for rec in users {
            engine.users.insert(rec);
        }
        for rec in channels {
            engine.channels.insert(rec);
        }
        engine
    }

    /// Frames to queue, in order. Drain after every operation.
    #[must_use]
    pub fn poll_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Storage writes, in order. Drain after every operation.
    #[must_use]
    pub fn poll_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// When [`Engine::handle_timeout`] next has work: the earliest end of a grace window.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.users.next_grace_end()
    }

    /// Ends every grace window due at `now`: those users go offline.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        for user_id in self.users.end_graces(now) {
            self.settle_presence(&user_id, now);
        }
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Users peers currently see online.
    pub fn online_users(&self) -> usize {
        self.users.online()
    }

    /// Registers connection `conn` of `user_id`, applying `details` as on connect, and queues the first
    /// `health.check` frame on it before any other frame can reach it.
    /// Refused (code 71) when the user already holds the maximum number of connections.
    pub fn connect(
        &mut self,
        conn: ConnId,
        user_id: &str,
        details: &JsonMap,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let open = self.users.get(user_id).map_or(0, |u| u.conns().len());
        let max = self.config.max_connections_per_user;
        if open >= max {
            return Err(Error::new(
                ErrorKind::TooManyConnections,
                format!("user {user_id} already has {open} open connections (the limit is {max})"),
            ));
        }
        let rec = self.users.get_or_insert(user_id, now);
        let mut changed = false;
        for (field, value) in details {
            changed |= fields::set_field(rec, field, value, WriteSource::Connect);
        }
        let invisible_changed = match fields::requested_invisible(details) {
            Some(inv) if inv != rec.invisible => {
                fields::set_invisible(rec, inv, false, now);
                true
            }
            _ => false,
        };
        if changed || invisible_changed {
            rec.updated_at = now;
        }
        rec.last_active = Some(now);
        self.users.add_conn(user_id, Arc::clone(&conn));
        let Some(entry) = self.users.get(user_id) else {
            return Err(Error::internal("user vanished"));
        };
        let me = entry.rec.own_view(true);
        self.writes
            .push(Write::SaveUser(Box::new(entry.rec.clone())));
        self.health_check_reply(&conn, me, now);
        self.conns.insert(conn, user_id);
        let flipped = self.settle_presence(user_id, now);
        if changed && !flipped {
            self.user_event(user_id, event_type::USER_UPDATED, now);
        }
        if invisible_changed {
            self.watching_visibility_changed(user_id, now);
        }
        Ok(())
    }

    /// Forgets a connection. The user goes offline at once after an explicit close, otherwise after the grace
    /// window unless another connection of theirs appears first.
    pub fn disconnect(&mut self, conn: &ConnId, ending: Ending, now: DateTime<Utc>) {
        let Some(user_id) = self.conns.remove(conn) else {
            return;
        };
        self.follows.forget(conn);
        for cid in self.channels.watched_by(conn) {
            self.unwatch(&cid, conn, &user_id, now);
        }
        let mut in_grace = false;
        if self.users.remove_conn(&user_id, conn) {
            // "Last seen" is the moment the last connection ended.
            if let Some(rec) = self.users.record_mut(&user_id) {
                rec.last_active = Some(now);
            }
            self.writes
                .push(Write::TouchLastActive(user_id.clone(), now));
            let grace = self.config.offline_grace;
            if ending == Ending::Abnormal && !grace.is_zero() {
                let until = TimeDelta::from_std(grace)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.users.start_grace(&user_id, until);
                in_grace = true;
            }
        }
        if !in_grace {
            self.settle_presence(&user_id, now);
        }
    }

    /// A client `health.check`: refreshes `last_active` and answers with a `health.check` carrying `me`.
    pub fn health_check(&mut self, conn: &ConnId, now: DateTime<Utc>) {
        let Some(user_id) = self.conns.user_of(conn).map(str::to_string) else {
            return;
        };
        let Some(rec) = self.users.record_mut(&user_id) else {
            return;
        };
        rec.last_active = Some(now);
        let me = rec.own_view(true);
        self.writes.push(Write::TouchLastActive(user_id, now));
        self.health_check_reply(conn, me, now);
    }

    /// Shutdown: stamps the stored `last_active` of everyone connected (their connections are closed by the
    /// caller).
    pub fn shutdown(&mut self, now: DateTime<Utc>) {
        let connected: Vec<String> = self
            .users
            .iter()
            .filter(|u| !u.conns().is_empty())
            .map(|u| u.rec.id.clone())
            .collect();
        for id in connected {
            self.writes.push(Write::TouchLastActive(id, now));
        }
    }
}
