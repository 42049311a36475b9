//! Event fan-out behind a trait: the engine says which connection gets which frame ([`Delivery`]); a [`Bus`]
//! carries each frame to the connection's send queue (an [`Outlet`]), wherever that connection is held.
//! [`local::LocalBus`] is the in-process default.

mod liveness;
pub mod local;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use presence_protocol::codes::close_code;

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
/// task records it, and a way to ask its task to close. The queue is a plain deque (no allocation while empty,
/// unlike a channel's fixed blocks), and the connection's one task is woken through a waker slot rather than a
/// stored future: an idle connection costs only this struct.
pub struct Outlet {
    frames: Mutex<Frames>,
    /// The connection's task, woken when a frame is queued or the connection is evicted.
    task: AtomicWaker,
    /// Bytes of the frames queued and not yet taken by the connection's task.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    liveness: Liveness,
    /// The close code asked for by [`Outlet::evict`]; 0 until then.
    evict_code: AtomicU16,
    /// The socket or the timer woke the task (through this outlet as their [`Wake`]r) since the task last
    /// polled them.
    io_woke: AtomicBool,
}

/// The frames waiting for the connection's task, and whether it is gone.
#[derive(Default)]
struct Frames {
    queue: VecDeque<Utf8Bytes>,
    closed: bool,
}

/// The receiving end of an [`Outlet`], drained by the connection's task. Dropping it refuses further frames.
pub struct OutletQueue {
    outlet: Arc<Outlet>,
}

impl OutletQueue {
    /// The next frame, its bytes no longer counting against the bound. The connection's task learns of a frame
    /// queued later through [`Outlet::register`], which it calls before looking.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let next = {
            let mut frames = self.outlet.lock_frames();
            let next = frames.queue.pop_front();
            if frames.queue.is_empty() && frames.queue.capacity() > 0 {
                // An idle connection holds no queue memory (a push allocates room for four frames anyway).
                frames.queue = VecDeque::new();
            }
            next
        };
        let frame = next?;
        self.outlet
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::SeqCst);
        Some(frame)
    }
}

impl Drop for OutletQueue {
    fn drop(&mut self) {
        let mut frames = self.outlet.lock_frames();
        frames.closed = true;
        let dropped: usize = frames.queue.drain(..).map(|f| f.len()).sum();
        self.outlet
            .queued_bytes
            .fetch_sub(dropped, Ordering::SeqCst);
    }
}

impl Outlet {
    /// An outlet whose queued frames may total at most `max_queued_bytes`, and the receiving end the
    /// connection's task drains.
    pub fn new(max_queued_bytes: usize, liveness: Liveness) -> (Arc<Outlet>, OutletQueue) {
        let outlet = Arc::new(Outlet {
            frames: Mutex::new(Frames::default()),
            task: AtomicWaker::new(),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            liveness,
            evict_code: AtomicU16::new(0),
            // The socket and the timer have not been polled yet.
            io_woke: AtomicBool::new(true),
        });
        let queue = OutletQueue {
            outlet: Arc::clone(&outlet),
        };
        (outlet, queue)
    }

    fn lock_frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        // A panic while holding the lock leaves the deque itself intact.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
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
        {
            let mut frames = self.lock_frames();
            if frames.closed {
                // The connection's task is gone; nothing will take the frame.
                drop(frames);
                self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                return false;
            }
            frames.queue.push_back(frame);
        }
        self.task.wake();
        true
    }

    /// Bytes of the frames queued and not yet taken by the connection's task.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::SeqCst)
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
        self.task.wake();
    }

    /// Makes `cx`'s task the one woken when a frame is queued or the connection is evicted. Called before
    /// looking at the queue and the eviction, so that what happens after the look wakes the task.
    pub fn register(&self, cx: &Context<'_>) {
        self.task.register(cx.waker());
    }

    /// The close code once the connection has been evicted.
    pub fn evicted(&self) -> Option<u16> {
        match self.evict_code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }

    /// Whether the socket may have something to read or the timer may have fired: one of them woke the task
    /// since the last call (or neither was polled yet). The task then polls both, the socket until it is
    /// pending, with `Waker::from(outlet)` as their waker.
    pub fn take_io_wake(&self) -> bool {
        self.io_woke.swap(false, Ordering::SeqCst)
    }
}

/// The waker the connection's task polls its socket's read and its timer with: it marks that one of them woke
/// the task, then wakes it. A wake-up by a queued frame or an eviction leaves both alone: each read attempt goes
/// through the upgraded socket's readiness check and the WebSocket zeroing its read buffer, and each timer poll
/// re-registers with the timer wheel, which for a fan-out to many connections is a cost per recipient.
impl Wake for Outlet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.io_woke.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}
