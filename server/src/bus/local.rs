//! The in-process bus: every connection is held by this process, so a delivery is a push onto its queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use crate::bus::{Bus, Outlet};
use crate::presence::{ConnHasher, ConnId, Delivery};

#[derive(Default)]
pub struct LocalBus {
    outlets: Mutex<HashMap<ConnId, Arc<Outlet>, ConnHasher>>,
    frames_sent: AtomicU64,
}

impl LocalBus {
    fn outlets(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<Outlet>, ConnHasher>> {
        // Nothing under this lock can panic halfway through a change; recover the guard regardless.
        self.outlets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bus for LocalBus {
    fn attach(&self, conn: ConnId, outlet: Arc<Outlet>) {
        self.outlets().insert(conn, outlet);
    }

    fn detach(&self, conn: &ConnId) {
        self.outlets().remove(conn);
    }

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

    fn close_all(&self, code: u16) {
        for outlet in self.outlets().values() {
            outlet.evict(code);
        }
    }

    fn evict(&self, conn: &ConnId, code: u16) {
        if let Some(outlet) = self.outlets().get(conn) {
            outlet.evict(code);
        }
    }

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

    fn frames_sent(&self) -> u64 {
        self.frames_sent.load(Ordering::Relaxed)
    }
}
