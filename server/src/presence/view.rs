//! A read-only copy of users and channels as of some moment, O(1) to take (the maps are persistent): queries
//! filter, sort and serialize on it without holding up the engine.

use serde::{Deserialize, Serialize};

use crate::presence::channels::Channels;
use crate::presence::types::ConnId;
use crate::presence::users::Users;

#[derive(Clone, Default)]
pub struct View {
    pub(super) users: Users,
    pub(super) channels: Channels,
    open_connections: usize,
}

impl View {
    pub(super) fn new(users: Users, channels: Channels, open_connections: usize) -> View {
        View {
            users,
            channels,
            open_connections,
        }
    }

    /// Open connections when the view was taken.
    pub fn open_connections(&self) -> usize {
        self.open_connections
    }

    /// Whether a `queryUsers` filter pins `id` (the usual presence query): it then looks at those users only, so
    /// it is cheap whatever the number of users.
    pub fn pins_user_ids(filter_conditions: &presence_protocol::JsonMap) -> bool {
        crate::presence::filter::Filter::parse(filter_conditions, None)
            .is_ok_and(|f| f.id_candidates().is_some())
    }

    /// The user's open connections when the view was taken, oldest first.
    pub fn connections_of(&self, user_id: &str) -> Vec<ConnId> {
        self.users
            .get(user_id)
            .map(|u| u.conns().to_vec())
            .unwrap_or_default()
    }

    /// Users peers saw online when the view was taken.
    pub fn online_users(&self) -> usize {
        self.users.online()
    }
}

/// The channels a `queryChannels` selected on a view, and what the caller asked to do with them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelPage {
    pub cids: Vec<String>,
    pub watch: bool,
    pub presence: bool,
    pub member_limit: Option<u64>,
}
