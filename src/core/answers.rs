//! REST answers about users as session inputs: the users of a list the app asked for, of the connected user's
//! own write, or of a recovery request enter here, and the session decides which of them replace what the client
//! holds (older news never rolls the cache back) and whose object is merged into the connected user. The
//! embedding layer carries the decisions out as [`Effect::StoreUser`] and [`Effect::KeepCachedUser`], in order.
//! A child of `session`, it shares its fields.

use super::{Effect, Session};
use crate::core::store::UserPresence;

/// Where the users of an answer come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsersAnswer {
    /// A list the app asked for: `queryUsers` (`follow`: made with `presence: true`, so the server now follows
    /// them), or the members of a channel a `watch`/`query`/`queryChannels` answered.
    Listed { follow: bool },
    /// The connected user's entry in the answer of their own write (`upsertUser`, `partialUpdateUser`).
    OwnWrite,
    /// One answer of [`Effect::Resubscribe`] of that generation (an empty list when the request failed).
    Recovery { generation: u64 },
}

impl Session {
    /// The users of a REST answer, in the answer's order. Each gets one effect, in that order:
    /// [`Effect::StoreUser`] when it replaces what the client holds, [`Effect::KeepCachedUser`] when it is older
    /// than that (an event overtook the answer) or belongs to an abandoned recovery. The answer that completes a
    /// recovery then reports what changed while the socket was down ([`Effect::PresenceChanged`]) and
    /// [`Effect::ConnectionRecovered`].
    pub fn handle_users_answer(&mut self, answer: UsersAnswer, users: Vec<UserPresence>) {
        match answer {
            UsersAnswer::Listed { follow } => {
                if follow {
                    self.subscriptions
                        .follow_users(users.iter().map(|user| user.id.as_str()));
                }
                self.take_answered(users, false);
            }
            UsersAnswer::OwnWrite => self.take_answered(users, true),
            UsersAnswer::Recovery { generation } => self.handle_recovery_answer(generation, users),
        }
    }

    /// Users the app asked for: the presence view takes each unless it is older than what it holds.
    fn take_answered(&mut self, users: Vec<UserPresence>, own: bool) {
        for (at, user) in users.into_iter().enumerate() {
            let effect = if self.observe_user(&user) {
                Effect::StoreUser {
                    at,
                    user_id: user.id,
                    own,
                }
            } else {
                Effect::KeepCachedUser { user_id: user.id }
            };
            self.effects.push(effect);
        }
    }
}
