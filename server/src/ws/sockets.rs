//! The sockets this process holds, by connection id: where the driver's deliveries and socket orders land (a
//! delivery is a push onto the connection's queue), and what a new connection registers with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::outlet::Outlet;
use crate::error::Error;
use crate::hub::{Hub, Sockets};
use crate::presence::{ConnHasher, ConnId, Delivery, SocketOrder};
use presence_protocol::JsonMap;

#[derive(Default)]
pub struct Outlets {
    outlets: Mutex<HashMap<ConnId, Arc<Outlet>, ConnHasher>>,
    frames_sent: AtomicU64,
}

impl Outlets {
    fn outlets(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<Outlet>, ConnHasher>> {
        // Nothing under this lock can panic halfway through a change; recover the guard regardless.
        self.outlets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outlets {
    /// A connection of this process starts receiving frames through `outlet`.
    fn attach(&self, conn: ConnId, outlet: Arc<Outlet>) {
        self.outlets().insert(conn, outlet);
    }

    /// The connection receives nothing more.
    pub fn detach(&self, conn: &ConnId) {
        self.outlets().remove(conn);
    }

    /// Registers a new connection of `user_id` with the hub, its socket attached first so that its first frame
    /// finds it. At the per-user cap, the user's connections held here that missed a pong may give way.
    pub async fn connect(
        &self,
        hub: &Hub,
        user_id: &str,
        details: &JsonMap,
        outlet: Arc<Outlet>,
    ) -> Result<ConnId, Error> {
        let conn = hub.new_conn_id();
        let replaceable = self.missed_pong(&hub.connections_of(user_id));
        self.attach(Arc::clone(&conn), outlet);
        match hub.connect(&conn, user_id, details, replaceable).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                self.detach(&conn);
                Err(e)
            }
        }
    }

    fn evict(&self, conn: &ConnId, code: u16) {
        if let Some(outlet) = self.outlets().get(conn) {
            outlet.evict(code);
        }
    }

    /// Of `conns`, the ones held here that have missed a pong, in the order given.
    fn missed_pong(&self, conns: &[ConnId]) -> Vec<ConnId> {
        if conns.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let outlets = self.outlets();
        conns
            .iter()
            .filter(|conn| {
                outlets
                    .get(*conn)
                    .is_some_and(|outlet| outlet.liveness().missed_pong(now))
            })
            .cloned()
            .collect()
    }
}

impl Sockets for Outlets {
    fn publish(&self, deliveries: Vec<Delivery>) {
        let outlets = self.outlets();
        let mut sent = 0;
        for delivery in deliveries {
            // Serialized once; every recipient shares the same bytes.
            let frame = Utf8Bytes::from(delivery.frame);
            for conn in &delivery.to {
                if let Some(outlet) = outlets.get(conn) {
                    if outlet.deliver(frame.clone(), delivery.supersedes.as_ref()) {
                        sent += 1;
                    }
                }
            }
        }
        self.frames_sent.fetch_add(sent, Ordering::Relaxed);
    }

    fn carry_out(&self, orders: Vec<SocketOrder>) {
        for order in orders {
            match order {
                SocketOrder::Close(conn, code) => self.evict(&conn, code),
                SocketOrder::Forget(conn) => self.detach(&conn),
            }
        }
    }

    fn close_all(&self, code: u16) {
        for outlet in self.outlets().values() {
            outlet.evict(code);
        }
    }

    fn frames_sent(&self) -> u64 {
        self.frames_sent.load(Ordering::Relaxed)
    }
}
