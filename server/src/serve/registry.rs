//! The connections of one listener, oldest first: what the cap counts, and which connection makes room for a
//! newcomer (the oldest with nothing in progress).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// `in_flight` of a connection chosen to make room: it takes no request any more.
const EVICTED: usize = usize::MAX;

/// One connection as the listener sees it.
pub struct ConnState {
    /// Requests in progress (an upgraded request counts for the socket's life), or [`EVICTED`].
    in_flight: AtomicUsize,
    /// Bytes arrived since the connection last had nothing in progress.
    heard: AtomicBool,
    evict: Notify,
    idle: Notify,
}

impl ConnState {
    /// Counts a request in, unless the connection was evicted.
    pub fn start_request(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != EVICTED).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a request out; the last one leaves the connection idle.
    pub fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.heard.store(false, Ordering::Release);
            self.idle.notify_one();
        }
    }

    /// Something arrived on the socket.
    pub fn heard(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Release);
        }
    }

    /// No request in progress and nothing received since the last one ended.
    pub fn is_idle_and_silent(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.heard.load(Ordering::Acquire)
    }

    /// Resolves when the connection is chosen to make room for a newcomer.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Resolves when the connection's last request in progress has ended.
    pub async fn became_idle(&self) {
        self.idle.notified().await
    }

    fn try_evict(&self) -> bool {
        let evicted = self
            .in_flight
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            self.evict.notify_one();
        }
        evicted
    }
}

/// The connections held, by age.
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    max: usize,
}

impl Registry {
    pub fn new(max: usize) -> Registry {
        Registry {
            conns: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: free under the cap, or made by evicting the oldest connection with
    /// nothing in progress. None when every connection is busy.
    pub fn admit(&self, registry: Arc<Registry>) -> Option<Slot> {
        let mut conns = self.lock();
        // Evicted connections still count until their task has closed them: each newcomer over the cap makes
        // room for itself.
        if conns.len() >= self.max && !conns.values().any(|c| c.try_evict()) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            heard: AtomicBool::new(false),
            evict: Notify::new(),
            idle: Notify::new(),
        });
        conns.insert(id, Arc::clone(&state));
        Some(Slot {
            registry,
            id,
            state,
        })
    }

    /// Evicts the oldest connection with nothing in progress, if any.
    pub fn evict_oldest_idle(&self) {
        let conns = self.lock();
        let _ = conns.values().any(|c| c.try_evict());
    }
}

/// A connection's place in the registry, given up when the socket closes.
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
