//! Event fan-out behind a trait: the engine says which connection gets which frame ([`Delivery`]); a [`Bus`]
//! carries each frame to the connection's send queue (an [`Outlet`]), wherever that connection is held.
//! [`local::LocalBus`] is the in-process default.

mod liveness;
pub mod local;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use presence_protocol::codes::close_code;
use tokio::sync::{mpsc, Notify};

pub use self::liveness::Liveness;
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
    /// Asks one attached connection to close with `code`.
    fn evict(&self, conn: &ConnId, code: u16);
    /// Of `conns`, the attached ones that have missed a pong ([`Liveness::missed_pong`]), in the order given.
    fn missed_pong(&self, conns: &[ConnId]) -> Vec<ConnId>;
    /// Frames handed to connection queues so far.
    fn frames_sent(&self) -> u64;
}

/// The sending side of one connection: a queue of frames bounded in bytes, the connection's liveness as its
/// reader sees it, and a way to ask its task to close.
pub struct Outlet {
    queue: mpsc::UnboundedSender<Utf8Bytes>,
    /// Bytes of the frames queued and not yet taken by the writer; shared with the [`OutletQueue`].
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    liveness: Liveness,
    evicted: Notify,
    evict_code: AtomicU16,
}

/// The receiving end of an [`Outlet`], drained by the connection's writer.
pub struct OutletQueue {
    frames: mpsc::UnboundedReceiver<Utf8Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

impl OutletQueue {
    /// The next frame; its bytes no longer count against the bound.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.frames.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::SeqCst);
        Some(frame)
    }
}

impl Outlet {
    /// An outlet whose queued frames may total at most `max_queued_bytes`, and the receiving end its writer
    /// drains.
    pub fn new(max_queued_bytes: usize, liveness: Liveness) -> (Arc<Outlet>, OutletQueue) {
        let (queue, frames) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outlet = Outlet {
            queue,
            queued_bytes: Arc::clone(&queued_bytes),
            max_queued_bytes,
            liveness,
            evicted: Notify::new(),
            evict_code: AtomicU16::new(0),
        };
        (
            Arc::new(outlet),
            OutletQueue {
                frames,
                queued_bytes,
            },
        )
    }

    /// Queues a frame. A consumer whose queued frames would exceed the byte bound with this one is evicted
    /// (4003) rather than buffered without bound; so is one sent a single frame larger than the bound.
    /// Returns whether the frame was queued.
    pub fn deliver(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        let reserved =
            self.queued_bytes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                    queued
                        .checked_add(len)
                        .filter(|&total| total <= self.max_queued_bytes)
                });
        if reserved.is_err() {
            self.evict(close_code::SLOW_CONSUMER);
            return false;
        }
        if self.queue.send(frame).is_err() {
            // The writer is gone; nothing will take the frame.
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// When the connection was last heard from.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
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
