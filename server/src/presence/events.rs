//! Who hears about what: the audience of each event type, with each event serialized once per audience class
//! (the user's own connections, everyone else), and which frames carry a user's whole state, so that a send queue
//! may drop a queued one for a newer one of the same kind ([`StateKey`]).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use presence_protocol::codes::event_type;
use presence_protocol::{Event, User};

use crate::model::event_time;
use crate::presence::types::{ConnHasher, ConnId, Delivery, StateEvent, StateKey};
use crate::presence::Engine;

/// An event as sent: serializing plain data to a string cannot fail.
fn frame_of(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

/// An event of `kind` created at `now`, everything else empty.
fn event(kind: &str, now: DateTime<Utc>) -> Event {
    Event {
        kind: kind.to_string(),
        created_at: Some(event_time(now)),
        ..Event::default()
    }
}

impl Engine {
    /// Queues `event` for `to` (nothing when `to` is empty).
    pub(super) fn deliver(&mut self, event: &Event, to: Vec<ConnId>) {
        self.deliver_keyed(event, to, None);
    }

    /// Queues `event` for `to`, superseding queued frames of the same `key` (see [`Delivery::supersedes`]).
    fn deliver_keyed(&mut self, event: &Event, to: Vec<ConnId>, supersedes: Option<StateKey>) {
        if to.is_empty() {
            return;
        }
        self.deliver_frame(frame_of(event), to, supersedes);
    }

    fn deliver_frame(&mut self, frame: String, to: Vec<ConnId>, supersedes: Option<StateKey>) {
        if to.is_empty() {
            return;
        }
        self.deliveries.push(Delivery {
            frame,
            to,
            supersedes,
        });
    }

    /// A `health.check` to `conn` carrying `me`: the first frame of a connection, and the answer to a client's.
    pub(super) fn health_check_reply(&mut self, conn: &ConnId, me: User, now: DateTime<Utc>) {
        let mut reply = event(event_type::HEALTH_CHECK, now);
        reply.connection_id = Some(conn.to_string());
        reply.cid = Some("*".to_string());
        reply.me = Some(me);
        self.deliver(&reply, vec![Arc::clone(conn)]);
    }

    /// Brings the announced presence of a user in line with their state; emits `user.presence.changed` on a
    /// real flip. Returns whether it flipped.
    pub(super) fn settle_presence(&mut self, user_id: &str, now: DateTime<Utc>) -> bool {
        if self.users.settle(user_id).is_none() {
            return false;
        }
        self.user_event(user_id, event_type::USER_PRESENCE_CHANGED, now);
        true
    }

    /// Sends a user-level event about `user_id` to their own connections (own view) and to every connection
    /// following their presence (public view), once per connection: followers through `queryUsers`, and
    /// watchers of channels the user is a member of that asked for presence (any watcher with
    /// `watch_implies_presence`). `user.updated` about an invisible user goes to their own connections only.
    pub(super) fn user_event(&mut self, user_id: &str, kind: &str, now: DateTime<Utc>) {
        self.user_event_to(user_id, kind, true, now);
    }

    /// Sends a user-level event about `user_id` to their own connections only.
    pub(super) fn own_user_event(&mut self, user_id: &str, kind: &str, now: DateTime<Utc>) {
        self.user_event_to(user_id, kind, false, now);
    }

    fn user_event_to(&mut self, user_id: &str, kind: &str, others: bool, now: DateTime<Utc>) {
        let Some(entry) = self.users.get(user_id) else {
            return;
        };
        // What a server-side listener hears (webhooks): the public view, with the same rule for invisible users.
        let silent = !others || (kind == event_type::USER_UPDATED && entry.rec.invisible);
        let own: HashSet<&ConnId, ConnHasher> = entry.conns().iter().collect();
        let reaches = |c: &&ConnId| !own.contains(c) && self.conns.contains(c);
        // A live update would tell others that an invisible user is active right now: while invisible, updates
        // reach only the user's own connections (others read the new fields from queries, or from the presence
        // event when the user becomes visible again).
        let public_to: Vec<ConnId> = if silent {
            Vec::new()
        } else if self.channels.memberships(user_id).next().is_none() {
            // Followers only: a set already, so no other set is built for them.
            self.follows
                .followers_of(user_id)
                .filter(reaches)
                .map(Arc::clone)
                .collect()
        } else {
            let mut audience: HashSet<&ConnId, ConnHasher> =
                self.follows.followers_of(user_id).collect();
            for cid in self.channels.memberships(user_id) {
                audience.extend(
                    self.channels
                        .watchers(cid)
                        .filter(|(_, presence)| *presence || self.config.watch_implies_presence)
                        .map(|(c, _)| c),
                );
            }
            audience.retain(|c| reaches(c));
            audience.into_iter().map(Arc::clone).collect()
        };
        let own_to: Vec<ConnId> = own
            .into_iter()
            .filter(|c| self.conns.contains(c))
            .map(Arc::clone)
            .collect();
        let mut public = event(kind, now);
        public.user = Some(entry.rec.public_view(entry.visible_online()));
        let mut mine = event(kind, now);
        mine.user = Some(entry.rec.own_view(entry.connected()));
        // Others' queues keep only the newest of these about the user; the user's own connections hear every
        // one of their own writes (a device may be waiting for the echo of the write it made).
        let key = match kind {
            event_type::USER_PRESENCE_CHANGED => Some(StateEvent::PresenceChanged),
            event_type::USER_UPDATED => Some(StateEvent::Updated),
            _ => None,
        }
        .map(|kind| StateKey {
            user_id: Arc::from(user_id),
            kind,
        });
        let public = frame_of(&public);
        if !silent {
            self.webhook(user_id, kind, &public);
        }
        self.deliver_frame(public, public_to, key);
        self.deliver(&mine, own_to);
    }

    /// `user.watching.start`/`stop` about `user_id` to every watcher of the channel but `except`.
    pub(super) fn watching_event(
        &mut self,
        cid: &str,
        user_id: &str,
        kind: &str,
        except: Option<&ConnId>,
        now: DateTime<Utc>,
    ) {
        let (Some(ch), Some(user)) = (self.channels.get(cid), self.users.get(user_id)) else {
            return;
        };
        let mut ev = event(kind, now);
        ev.cid = Some(cid.to_string());
        ev.channel_id = Some(ch.id.clone());
        ev.channel_type = Some(ch.channel_type.clone());
        ev.user = Some(user.rec.public_view(user.visible_online()));
        ev.watcher_count = Some(self.watching_users(cid).len() as u64);
        let to: Vec<ConnId> = self
            .channels
            .watchers(cid)
            .map(|(c, _)| c)
            .filter(|c| Some(*c) != except && self.conns.contains(c))
            .map(Arc::clone)
            .collect();
        self.deliver(&ev, to);
    }
}
