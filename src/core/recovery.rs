//! State recovery after a reconnect: the session asks for every subscription again ([`Effect::Resubscribe`]),
//! collects the answers, and reconciles the user store from them, reporting each user whose visible presence
//! changed while the socket was down before `connection.recovered`. A child of `session`, it shares its fields.

use super::{Effect, Session};
use crate::core::store::{UserPresence, UserStore};

#[derive(Debug)]
pub(super) struct Recovery {
    pub(super) generation: u64,
    pending: usize,
    fresh: Vec<UserPresence>,
    /// Users whose state arrived live since the requests went out: newer than any answer, they are kept.
    pub(super) live: Vec<String>,
}

impl Session {
    /// The answer to one request of [`Effect::Resubscribe`]: its users are taken unless it belongs to an
    /// abandoned recovery, or for a user whose answer is older than what the cache holds (an event overtook it).
    /// The last answer finishes the recovery.
    pub(super) fn handle_recovery_answer(&mut self, generation: u64, users: Vec<UserPresence>) {
        let Some(recovery) = self
            .recovery
            .as_mut()
            .filter(|recovery| recovery.generation == generation)
        else {
            for user in users {
                self.effects
                    .push(Effect::KeepCachedUser { user_id: user.id });
            }
            return;
        };
        for (at, user) in users.into_iter().enumerate() {
            if self.users.is_outdated(&user.id, &user.state) {
                self.effects
                    .push(Effect::KeepCachedUser { user_id: user.id });
            } else {
                self.effects.push(Effect::StoreUser {
                    at,
                    user_id: user.id.clone(),
                    own: false,
                });
                recovery.fresh.push(user);
            }
        }
        recovery.pending = recovery.pending.saturating_sub(1);
        if recovery.pending == 0 {
            self.finish_recovery();
        }
    }

    pub(super) fn start_recovery(&mut self) {
        self.recovery_generation += 1;
        let requests = self.subscriptions.recovery();
        self.recovery = Some(Recovery {
            generation: self.recovery_generation,
            pending: requests.len(),
            fresh: Vec::new(),
            live: Vec::new(),
        });
        let empty = requests.is_empty();
        self.effects.push(Effect::Resubscribe {
            generation: self.recovery_generation,
            requests,
        });
        if empty {
            self.finish_recovery();
        }
    }

    /// Compares the fresh answers with the cache: every known user whose visible presence changed while the
    /// socket was down gets an event, then `connection.recovered`.
    fn finish_recovery(&mut self) {
        let Some(recovery) = self.recovery.take() else {
            return;
        };
        // One state per user, the last answer naming them wins; events follow the order of the answers.
        let mut latest = UserStore::default();
        for user in &recovery.fresh {
            latest.apply(&user.id, &user.state);
        }
        for user in recovery.fresh {
            let Some(state) = latest.remove(&user.id) else {
                continue;
            };
            if recovery.live.contains(&user.id) || self.users.is_outdated(&user.id, &state) {
                continue;
            }
            let known = self.users.get(&user.id).is_some();
            if self.users.apply(&user.id, &state) && known {
                self.effects
                    .push(Effect::PresenceChanged { user_id: user.id });
            }
        }
        self.effects.push(Effect::ConnectionRecovered);
    }
}
