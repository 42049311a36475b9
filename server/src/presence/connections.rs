//! Open connections and whose they are, in a persistent map (O(1) to copy).

use std::sync::Arc;

use crate::presence::types::{ConnId, ConnMap};

#[derive(Clone, Default)]
pub(super) struct Connections {
    /// connection → its user.
    owners: ConnMap<String>,
}

impl Connections {
    pub fn insert(&mut self, conn: ConnId, user_id: &str) {
        self.owners.insert(conn, user_id.to_string());
    }

    /// Forgets a connection; says whose it was.
    pub fn remove(&mut self, conn: &ConnId) -> Option<String> {
        self.owners.remove(conn)
    }

    pub fn user_of(&self, conn: &str) -> Option<&str> {
        self.owners.get(conn).map(String::as_str)
    }

    /// The connection named by `conn` with its owner, if it is open.
    pub fn get(&self, conn: &str) -> Option<(ConnId, &str)> {
        self.owners
            .get_key_value(conn)
            .map(|(id, user)| (Arc::clone(id), user.as_str()))
    }

    pub fn contains(&self, conn: &ConnId) -> bool {
        self.owners.contains_key(conn)
    }

    /// The open connections whose id starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<ConnId> {
        self.owners
            .keys()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }
}
