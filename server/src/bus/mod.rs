//! Event fan-out behind a trait: the engine says which connection gets which frame ([`Delivery`]); a [`Bus`]
//! carries each frame to the connection's send queue (an [`Outlet`]), wherever that connection is held.
//! [`local::LocalBus`] is the in-process default.

pub mod local;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use presence_protocol::codes::close_code;
use tokio::sync::{mpsc, Notify};

use crate::presence::{ConnId, Delivery};

/// Carries frames to connections.
pub trait Bus: Send + Sync + 'static {
    /// A connection of this process starts receiving frames through `outlet`.
    fn attach(&self, conn: ConnId, outlet: Arc<Outlet>);
    /// The connection receives nothing more.
    fn detach(&self, conn: &ConnId);
    /// Hands frames to their connections. Each connection receives its frames in the order given.
    fn publish(&self, deliveries: Vec<Delivery>);
    /// Asks every attached connection to close with `code`.
    fn close_all(&self, code: u16);
    /// Frames handed to connection queues so far.
    fn frames_sent(&self) -> u64;
}

/// The sending side of one connection: a bounded queue of frames, and a way to ask its task to close.
pub struct Outlet {
    queue: mpsc::Sender<Utf8Bytes>,
    evicted: Notify,
    evict_code: AtomicU16,
}

impl Outlet {
    /// An outlet holding at most `capacity` frames, and the receiving end its writer drains.
    pub fn new(capacity: usize) -> (Arc<Outlet>, mpsc::Receiver<Utf8Bytes>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let outlet = Outlet {
            queue,
            evicted: Notify::new(),
            evict_code: AtomicU16::new(0),
        };
        (Arc::new(outlet), rx)
    }

    /// Queues a frame; a consumer whose queue is full is evicted rather than buffered without bound.
    /// Returns whether the frame was queued.
    pub fn deliver(&self, frame: Utf8Bytes) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.evict(close_code::SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection's task to close the socket with `code` (the first code asked for wins).
    pub fn evict(&self, code: u16) {
        let _ = self
            .evict_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.evicted.notify_one();
    }

    /// Resolves with the close code once the connection has been evicted.
    pub async fn evicted(&self) -> u16 {
        self.evicted.notified().await;
        self.evict_code.load(Ordering::SeqCst)
    }
}
