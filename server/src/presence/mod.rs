//! The presence engine: users, their connections, channels, and who follows whose presence — with no IO and no
//! clock. Every operation takes `now`; the one deadline kind (the offline grace window) is data, read with
//! [`Engine::poll_timeout`] and acted on with [`Engine::handle_timeout`]. What an operation causes is queued for
//! the caller to drain: [`Delivery`]s (which connections get which frame, in order) and storage [`Write`]s.

mod access;
mod census;
mod channels;
pub mod command;
mod connections;
mod distinct;
mod events;
mod fields;
pub(crate) mod filter;
mod follows;
mod get_or_create;
mod limits;
mod linger;
mod members;
mod pick;
mod queries;
mod types;
mod users;
mod view;
mod watch;
mod webhooks;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use presence_protocol::codes::event_type;
use presence_protocol::JsonMap;

use crate::error::{Error, ErrorKind};
use crate::model::{AppSettings, ChannelRecord, UserRecord, Write};

use self::channels::Channels;
use self::connections::Connections;
pub use self::distinct::distinct_channel_key;
use self::fields::{Changed, WriteSource};
use self::follows::Follows;
use self::limits::ChannelQuota;
use self::linger::LingeringWatches;
pub use self::types::{
    Config, ConnHasher, ConnId, Delivery, Ending, SocketOrder, StateEvent, StateKey,
};
use self::users::Users;
pub use self::view::{ChannelPage, Spent, View};

/// The whole state. Cloning it is O(1) (persistent maps); the clone shares everything until either side changes.
#[derive(Clone)]
pub struct Engine {
    config: Config,
    users: Users,
    conns: Connections,
    channels: Channels,
    follows: Follows,
    /// Channels each user has created.
    channel_quota: ChannelQuota,
    lingering: LingeringWatches,
    /// The app's settings (`PATCH /app`).
    app: AppSettings,
    deliveries: Vec<Delivery>,
    writes: Vec<Write>,
    sockets: Vec<SocketOrder>,
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
            channel_quota: ChannelQuota::default(),
            lingering: LingeringWatches::default(),
            app: AppSettings::default(),
            deliveries: Vec::new(),
            writes: Vec::new(),
            sockets: Vec::new(),
        };
        for rec in users {
            engine.users.insert(rec);
        }
        for rec in channels {
            engine.channel_quota.count(rec.created_by.as_deref());
            engine.channels.insert(rec);
        }
        engine
    }

    /// Users and channels as they are now, for readers.
    pub fn view(&self) -> View {
        View::new(
            self.users.clone(),
            self.channels.clone(),
            self.conns.len(),
            self.follows.pairs(),
            self.app.clone(),
            self.webhook_url().map(Arc::from),
        )
    }

    /// Frames to queue, in order. Drain after every operation.
    #[must_use]
    pub fn poll_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// What operations asked of sockets, in order. Drain after every operation.
    #[must_use]
    pub fn poll_socket_orders(&mut self) -> Vec<SocketOrder> {
        std::mem::take(&mut self.sockets)
    }

    fn order(&mut self, order: SocketOrder) {
        self.sockets.push(order);
    }

    /// Storage writes, in order. Drain after every operation.
    #[must_use]
    pub fn poll_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// When [`Engine::handle_timeout`] next has work: the earliest end of a grace window (of a user's presence
    /// or of a watch that outlived its connection).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        match (self.users.next_grace_end(), self.lingering.next_end()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends every grace window due at `now`: those users stop watching what they did not return to, and go
    /// offline.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let gone = self.users.end_graces(now);
        for (user_id, cid) in self.lingering.end_due(now) {
            self.watch_ended(&cid, &user_id, now);
        }
        for user_id in gone {
            self.settle_presence(&user_id, now);
        }
    }

    /// Open connections.
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Users peers currently see online.
    #[cfg(test)]
    pub fn online_users(&self) -> usize {
        self.users.online()
    }

    /// The user's open connections, oldest first, when they hold as many as allowed (so a new one must replace
    /// one of them or be refused); empty otherwise.
    pub fn connections_at_cap(&self, user_id: &str) -> &[ConnId] {
        match self.users.get(user_id) {
            Some(u) if u.conns().len() >= self.config.max_connections_per_user => u.conns(),
            _ => &[],
        }
    }

    /// Registers connection `conn` of `user_id`, applying `details` as on connect, and queues the first
    /// `health.check` frame on it before any other frame can reach it.
    ///
    /// When the user already holds the maximum number of connections, the oldest of them that the caller lists
    /// in `replaceable` (those it found dead) gives way: it ends as abnormally ended connections do, after the
    /// new one is registered, so the user never stops counting as online. It is returned for the caller to
    /// close. With none to replace, the connection is refused (code 71). It is refused (code 4) as well when
    /// the user id is not a valid one, or `details` would make the user's data too large.
    pub fn connect(
        &mut self,
        conn: ConnId,
        user_id: &str,
        details: &JsonMap,
        replaceable: &[ConnId],
        now: DateTime<Utc>,
    ) -> Result<Option<ConnId>, Error> {
        limits::check_user_id("json.user_id", user_id)?;
        let at_cap = self.connections_at_cap(user_id);
        let replaced = if at_cap.is_empty() {
            None
        } else {
            let dead: HashSet<&ConnId, ConnHasher> = replaceable.iter().collect();
            match at_cap.iter().find(|c| dead.contains(c)) {
                Some(oldest_dead) => Some(Arc::clone(oldest_dead)),
                None => {
                    let (open, max) = (at_cap.len(), self.config.max_connections_per_user);
                    return Err(Error::new(
                        ErrorKind::TooManyConnections,
                        format!(
                            "user {user_id} already has {open} open connections (the limit is {max}) \
                             and none of them has missed a pong"
                        ),
                    ));
                }
            }
        };
        self.check_connect_details(user_id, details, now)?;
        let connected = self.users.get(user_id).is_some_and(|u| u.connected());
        let (changed, hidden_changed) = self.users.edit_or_insert(user_id, now, |rec| {
            let was_hidden = rec.hidden();
            let mut changed = Changed::default();
            for (field, value) in details {
                let written = fields::set_field(rec, field, value, WriteSource::Connect);
                changed |= Changed::field(field, written);
            }
            if let Some(inv) = fields::requested_invisible(details) {
                rec.invisible = inv;
            }
            let hidden_changed = rec.hidden() != was_hidden;
            if hidden_changed {
                fields::switch_hidden(rec, connected, now);
            }
            // Hiding, and own-only fields, are not part of the profile: `updated_at` moving with them would date
            // the switch.
            if changed.profile {
                rec.updated_at = now;
            }
            rec.last_active = Some(now);
            (changed, hidden_changed)
        });
        self.users.add_conn(user_id, Arc::clone(&conn));
        let Some(entry) = self.users.get(user_id) else {
            return Err(Error::internal("user vanished"));
        };
        let me = entry.rec.own_view(true);
        self.writes
            .push(Write::SaveUser(Box::new((*entry.rec).clone())));
        self.users.last_active_stored(user_id, Some(now));
        self.health_check_reply(&conn, me, now);
        self.conns.insert(conn, user_id);
        let went_hidden = hidden_changed && !self.is_visible(user_id);
        if went_hidden {
            self.watching_visibility_changed(user_id, now);
        }
        let flipped = self.settle_presence(user_id, now);
        if changed.profile && !flipped {
            self.user_event(user_id, event_type::USER_UPDATED, now);
        } else if changed.own {
            // The user's other connections learn of their own settings.
            self.own_user_event(user_id, event_type::USER_UPDATED, now);
        }
        if hidden_changed && !went_hidden {
            self.watching_visibility_changed(user_id, now);
        }
        if let Some(old) = &replaced {
            self.disconnect(old, Ending::Abnormal, now);
        }
        Ok(replaced)
    }

    /// Forgets a connection. The user goes offline at once after an explicit close, otherwise after the grace
    /// window unless another connection of theirs appears first. Likewise for the channels it watched: the user
    /// stops watching them at once, or when the grace window ends without their watching them again. An
    /// invisible user gets no grace window: others see nothing it could smooth over.
    pub fn disconnect(&mut self, conn: &ConnId, ending: Ending, now: DateTime<Utc>) {
        let Some(user_id) = self.conns.remove(conn) else {
            return;
        };
        self.follows.forget(conn);
        let grace_until = if ending == Ending::Abnormal && self.is_visible(&user_id) {
            self.grace_end(now)
        } else {
            None
        };
        let mut in_grace = false;
        if self.users.remove_conn(&user_id, conn) {
            // "Last seen" is the moment the last connection ended.
            if let Some(rec) = self.users.record_mut(&user_id) {
                rec.last_active = Some(now);
            }
            self.writes
                .push(Write::TouchLastActive(user_id.clone(), now));
            self.users.last_active_stored(&user_id, Some(now));
            if let Some(until) = grace_until {
                self.users.start_grace(&user_id, until);
                in_grace = true;
            }
        }
        // Leaving reads as the reverse of arriving (online, then watching): no longer watching, then offline.
        for cid in self.channels.watched_by(conn) {
            self.unwatch_ended(&cid, conn, &user_id, grace_until, now);
        }
        if !in_grace {
            if !self.users.get(&user_id).is_some_and(|u| u.connected()) {
                self.end_lingering(&user_id, now);
            }
            self.settle_presence(&user_id, now);
        }
    }

    /// Ends, as closed by their clients, every connection whose id starts with `prefix` (those of a server
    /// process that is gone: its users go offline at once, their watches end); returns them.
    pub fn disconnect_prefixed(&mut self, prefix: &str, now: DateTime<Utc>) -> Vec<ConnId> {
        let mut gone = self.conns.with_prefix(prefix);
        // In id order, so every process that applies this ends them in the same order.
        gone.sort();
        for conn in &gone {
            self.disconnect(conn, Ending::Explicit, now);
        }
        gone
    }

    /// When a grace window opened at `now` ends; None when there is none.
    fn grace_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let grace = self.config.offline_grace;
        (!grace.is_zero()).then(|| {
            TimeDelta::from_std(grace)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
    }

    /// A client `health.check`: refreshes `last_active` and answers with a `health.check` carrying `me`.
    ///
    /// Everyone reads the refreshed value at once; storage gets it only when what it holds is
    /// `last_active_refresh` old (connects and last disconnects are always written), so a crash loses at most
    /// that much of the refresh, and a connected user costs storage a few writes an hour rather than one per
    /// ping.
    pub fn health_check(&mut self, conn: &ConnId, now: DateTime<Utc>) {
        let Some(user_id) = self.conns.user_of(conn).map(str::to_string) else {
            return;
        };
        let Some(rec) = self.users.record_mut(&user_id) else {
            return;
        };
        rec.last_active = Some(now);
        let me = rec.own_view(true);
        let every = TimeDelta::from_std(self.config.last_active_refresh).unwrap_or(TimeDelta::MAX);
        if self.users.last_active_refresh_due(&user_id, every, now) {
            self.writes
                .push(Write::TouchLastActive(user_id.clone(), now));
            self.users.last_active_stored(&user_id, Some(now));
        }
        self.health_check_reply(conn, me, now);
    }

    /// Shutdown of the process whose connection ids start with `prefix`: stamps the stored `last_active` of
    /// everyone connected there (their connections are closed by the caller). A cluster node has ended its
    /// connections through the log first ([`command::NodeDown`]), so nobody is left to stamp there.
    pub fn shutdown(&mut self, prefix: &str, now: DateTime<Utc>) {
        let connected: Vec<String> = self
            .users
            .iter()
            .filter(|u| u.conns().iter().any(|c| c.starts_with(prefix)))
            .map(|u| u.rec.id.clone())
            .collect();
        for id in connected {
            self.writes.push(Write::TouchLastActive(id.clone(), now));
            self.users.last_active_stored(&id, Some(now));
        }
    }
}
