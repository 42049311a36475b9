//! A read-only copy of the users as of some moment, O(1) to take (the maps are persistent).

use crate::presence::users::Users;

#[derive(Clone, Default)]
pub struct View {
    pub(super) users: Users,
    open_connections: usize,
}

impl View {
    pub(super) fn new(users: Users, open_connections: usize) -> View {
        View {
            users,
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
