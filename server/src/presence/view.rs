//! A read-only copy of users and channels as of some moment, O(1) to take (the maps are persistent): queries
//! filter, sort and serialize on it without holding up the engine.

use crate::presence::channels::Channels;
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

    /// Users peers saw online when the view was taken.
    pub fn online_users(&self) -> usize {
        self.users.online()
    }
}

/// The channels a `queryChannels` selected on a view, and what the caller asked to do with them.
#[derive(Debug, Clone)]
pub struct ChannelPage {
    pub cids: Vec<String>,
    pub watch: bool,
    pub presence: bool,
    pub member_limit: Option<u64>,
}
