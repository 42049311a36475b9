//! A connection's send queue: the frames waiting for its socket, bounded in bytes, with the connection's
//! liveness and a way to ask its task to close. [`super::sockets::Outlets`] holds one per connection of this
//! process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use presence_protocol::codes::close_code;
use tokio::time::Instant;

use super::liveness::Liveness;
use crate::presence::{ConnHasher, StateEvent, StateKey};

/// The sending side of one connection: a queue of frames bounded in bytes, the connection's liveness as its
/// task records it, and a way to ask its task to close. The queue is a plain deque (no allocation while empty,
/// unlike a channel's fixed blocks), and the connection's one task is woken through a waker slot rather than a
/// stored future: an idle connection costs only this struct.
///
/// A frame that carries a user's whole state ([`StateKey`]) replaces a queued frame of the same key: the older one
/// is dropped where it waits and the newer goes to the back. What the client reads is then the frames as sent,
/// minus some: never a state older than one it already read, always ending on the newest, and in their order
/// across users. A user flipping a setting a thousand times while a follower's socket is stalled costs that
/// follower two frames in its queue, not a thousand and an eviction.
pub struct Outlet {
    frames: Mutex<Frames>,
    /// The connection's task, woken when a frame is queued or the connection is evicted.
    task: AtomicWaker,
    max_queued_bytes: usize,
    liveness: Liveness,
    /// The close code asked for by [`Outlet::evict`]; 0 until then.
    evict_code: AtomicU16,
    /// The socket or the timer woke the task (through this outlet as their [`Wake`]r) since the task last
    /// polled them.
    io_woke: AtomicBool,
    /// A batching connection's window is open: its timer wakes the task when it ends, so a frame queued meanwhile
    /// wakes nothing (a storm would otherwise cost every recipient a wake-up and an empty poll per event).
    window_open: AtomicBool,
}

/// The frames waiting for the connection's task, and whether it is gone.
#[derive(Default)]
struct Frames {
    /// In the order queued, by increasing `seq`; superseded entries stay as holes until taken or compacted.
    queue: VecDeque<Queued>,
    /// Bytes of the frames queued (holes excluded).
    bytes: usize,
    /// Holes in `queue`.
    holes: usize,
    /// `seq` of the next frame queued.
    next_seq: u64,
    /// For each key with a frame in the queue, that frame's `seq`. A frame queued onto an empty queue is left
    /// out (it is about to be written, and a connection keeping up then never touches the index), so a key may
    /// have one frame more queued: the oldest, at the front.
    latest: HashMap<StateKey, u64, ConnHasher>,
    closed: bool,
    /// The connection takes batches: the front frame waits for the window too, so it is indexed like the others.
    batching: bool,
    /// When the queue last went from empty to holding a frame: where a batching window starts.
    filled_at: Option<Instant>,
}

/// One entry of the queue: a frame, or the hole a superseded frame left.
struct Queued {
    seq: u64,
    frame: Option<Utf8Bytes>,
    /// The key the frame is indexed under in `latest`, if it is.
    supersedes: Option<StateKey>,
}

/// Holes are compacted away once there are this many and they outnumber the frames: a storm that keeps
/// superseding the same frames leaves the queue's length bounded by its bytes, not by the storm.
const COMPACT_HOLES: usize = 64;

impl Frames {
    /// Punches a hole where the queued frame of `key` waits, if one does; returns its length.
    fn supersede(&mut self, key: &StateKey) -> usize {
        let Some(seq) = self.latest.remove(key) else {
            return 0;
        };
        let Ok(at) = self.queue.binary_search_by_key(&seq, |q| q.seq) else {
            return 0;
        };
        let Some(frame) = self.queue[at].frame.take() else {
            return 0;
        };
        self.holes += 1;
        self.bytes -= frame.len();
        if self.holes >= COMPACT_HOLES && self.holes * 2 > self.queue.len() {
            self.queue.retain(|q| q.frame.is_some());
            self.holes = 0;
        }
        frame.len()
    }

    /// Whether a frame of `key` that has just superseded a queued one cancels it instead of replacing it: on a
    /// batching connection, presence events about a user flip (online, offline, online, ...), so two of them
    /// that the client has not read yet bring it back to the state it last read — a flip that lasted less
    /// than the window is no event at all. Without batching the frames are written as they come, and only a
    /// stalled queue holds two; those are replaced, as before.
    fn cancels(&self, key: &StateKey) -> bool {
        self.batching && key.kind == StateEvent::PresenceChanged
    }

    fn push(&mut self, frame: Utf8Bytes, supersedes: Option<&StateKey>) {
        if self.bytes == 0 && self.batching {
            self.filled_at = Some(Instant::now());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += frame.len();
        // Only an indexed frame keeps its key: on the common path (a connection keeping up) a fan-out adds no
        // reference count, no hashing and no allocation per recipient.
        let supersedes = supersedes
            .filter(|_| self.batching || !self.queue.is_empty())
            .cloned();
        if let Some(key) = &supersedes {
            self.latest.insert(key.clone(), seq);
        }
        self.queue.push_back(Queued {
            seq,
            frame: Some(frame),
            supersedes,
        });
    }

    /// Length of the frame at the front, skipping holes.
    fn front_len(&mut self) -> Option<usize> {
        while let Some(queued) = self.queue.front() {
            if let Some(frame) = &queued.frame {
                return Some(frame.len());
            }
            self.queue.pop_front();
            self.holes -= 1;
        }
        None
    }

    /// The frame at the front, skipping holes.
    fn pop(&mut self) -> Option<Utf8Bytes> {
        let frame = loop {
            let queued = self.queue.pop_front()?;
            let Some(frame) = queued.frame else {
                self.holes -= 1;
                continue;
            };
            if let Some(key) = &queued.supersedes {
                if self.latest.get(key) == Some(&queued.seq) {
                    self.latest.remove(key);
                }
            }
            break frame;
        };
        self.bytes -= frame.len();
        if self.queue.is_empty() {
            // An idle connection holds no queue memory (a push allocates room for four frames anyway).
            if self.queue.capacity() > 0 {
                self.queue = VecDeque::new();
            }
            if self.latest.capacity() > 0 {
                self.latest = HashMap::default();
            }
        }
        Some(frame)
    }
}

/// The receiving end of an [`Outlet`], drained by the connection's task. Dropping it refuses further frames.
pub struct OutletQueue {
    outlet: Arc<Outlet>,
}

impl OutletQueue {
    /// The next frame, its bytes no longer counting against the bound. The connection's task learns of a frame
    /// queued later through [`Outlet::register`], which it calls before looking.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        self.outlet.lock_frames().pop()
    }

    /// When the frames waiting began to wait (batching connections only): `None` when none waits.
    pub fn waiting_since(&self) -> Option<Instant> {
        let frames = self.outlet.lock_frames();
        frames.filled_at.filter(|_| frames.bytes > 0)
    }

    /// Tells the outlet whether the connection's batching window is open (see `Outlet::window_open`). The task
    /// closes it before it looks at the queue a last time, so a frame queued after that look wakes it.
    pub fn set_window_open(&self, open: bool) {
        self.outlet.window_open.store(open, Ordering::SeqCst);
    }

    /// The queued frames as one batch frame, `[frame,frame,...]` (each frame one event's JSON), in order, of at
    /// most `max_len` bytes unless its first frame alone is longer; `None` when nothing waits. A window that
    /// gathered one frame sends it as it is: the same event, without a copy to wrap it (a quiet connection's
    /// every frame).
    pub fn take_batch(&mut self, max_len: usize) -> Option<Utf8Bytes> {
        let mut frames = self.outlet.lock_frames();
        let first = frames.pop()?;
        let Some(len) = frames.front_len() else {
            return Some(first);
        };
        let mut batch = String::with_capacity(first.len() + len + 3);
        batch.push('[');
        batch.push_str(first.as_str());
        while let Some(len) = frames.front_len() {
            if batch.len() + len + 2 > max_len {
                break;
            }
            let Some(frame) = frames.pop() else {
                break;
            };
            batch.push(',');
            batch.push_str(frame.as_str());
        }
        batch.push(']');
        Some(Utf8Bytes::from(batch))
    }
}

impl Drop for OutletQueue {
    fn drop(&mut self) {
        let mut frames = self.outlet.lock_frames();
        frames.closed = true;
        frames.queue = VecDeque::new();
        frames.latest = HashMap::default();
        frames.bytes = 0;
        frames.holes = 0;
    }
}

impl Outlet {
    /// An outlet whose queued frames may total at most `max_queued_bytes`, and the receiving end the
    /// connection's task drains.
    pub fn new(
        max_queued_bytes: usize,
        liveness: Liveness,
        batching: bool,
    ) -> (Arc<Outlet>, OutletQueue) {
        let outlet = Arc::new(Outlet {
            frames: Mutex::new(Frames {
                batching,
                ..Frames::default()
            }),
            task: AtomicWaker::new(),
            max_queued_bytes,
            liveness,
            evict_code: AtomicU16::new(0),
            // The socket and the timer have not been polled yet.
            io_woke: AtomicBool::new(true),
            window_open: AtomicBool::new(false),
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

    /// Queues a frame, first dropping the queued frame it supersedes (if `supersedes` names a key with one).
    /// A consumer whose queued frames would exceed the byte bound with this one is evicted (4003) rather than
    /// buffered without bound; so is one sent a single frame larger than the bound. Returns whether the frame
    /// was taken: queued, or cancelled with the queued one it undoes.
    pub fn deliver(&self, frame: Utf8Bytes, supersedes: Option<&StateKey>) -> bool {
        {
            let mut frames = self.lock_frames();
            if frames.closed {
                // The connection's task is gone; nothing will take the frame.
                return false;
            }
            if let Some(key) = supersedes {
                if frames.supersede(key) > 0 && frames.cancels(key) {
                    // The queued flip and this one undo each other: the client reads neither.
                    return true;
                }
            }
            let fits = frames
                .bytes
                .checked_add(frame.len())
                .is_some_and(|total| total <= self.max_queued_bytes);
            if !fits {
                drop(frames);
                self.evict(close_code::SLOW_CONSUMER);
                return false;
            }
            frames.push(frame, supersedes);
        }
        if !self.window_open.load(Ordering::SeqCst) {
            self.task.wake();
        }
        true
    }

    /// Bytes of the frames queued and not yet taken by the connection's task.
    pub fn queued_bytes(&self) -> usize {
        self.lock_frames().bytes
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn outlet(max_queued_bytes: usize) -> (Arc<Outlet>, OutletQueue) {
        Outlet::new(
            max_queued_bytes,
            Liveness::new(Instant::now(), Duration::from_secs(5)),
            false,
        )
    }

    #[test]
    fn a_batch_holds_the_queued_frames_in_order_within_its_size_and_only_the_final_state_of_a_user()
    {
        let (outlet, mut queue) = Outlet::new(
            1 << 20,
            Liveness::new(Instant::now(), Duration::from_secs(5)),
            true,
        );
        let u = key("u", StateEvent::PresenceChanged);
        for (frame, key) in [
            (r#"{"u":1}"#, Some(&u)),
            (r#"{"x":1}"#, None),
            (r#"{"u":2}"#, Some(&u)),
            (r#"{"u":3}"#, Some(&u)),
            (r#"{"y":1}"#, None),
        ] {
            assert!(outlet.deliver(Utf8Bytes::from(frame), key));
        }
        // Batching, the front frame waits for the window too: it is superseded like the others.
        assert_eq!(
            queue.take_batch(1 << 16).unwrap().as_str(),
            r#"[{"x":1},{"u":3},{"y":1}]"#
        );
        assert!(queue.take_batch(1 << 16).is_none());
        for i in 0..10 {
            assert!(outlet.deliver(Utf8Bytes::from(format!(r#"{{"n":{i}}}"#)), None));
        }
        // 7 bytes a frame: three make 25 bytes with the brackets and commas, four would make 33.
        let first = queue.take_batch(27).unwrap();
        assert_eq!(first.as_str(), r#"[{"n":0},{"n":1},{"n":2}]"#);
        let mut rest = Vec::new();
        while let Some(batch) = queue.take_batch(27) {
            rest.push(batch.to_string());
        }
        assert_eq!(rest.len(), 3);
        assert_eq!(
            rest.last().unwrap(),
            r#"{"n":9}"#,
            "one frame left goes as it is"
        );
        assert_eq!(outlet.queued_bytes(), 0);
    }

    #[test]
    fn on_a_batching_connection_two_unread_presence_flips_of_a_user_cancel_out() {
        let (outlet, mut queue) = Outlet::new(
            1 << 20,
            Liveness::new(Instant::now(), Duration::from_secs(5)),
            true,
        );
        let u = key("u", StateEvent::PresenceChanged);
        let v = key("v", StateEvent::PresenceChanged);
        let profile = key("u", StateEvent::Updated);
        for (frame, key) in [
            ("u-off", Some(&u)),
            ("v-off", Some(&v)),
            ("u-on", Some(&u)),
            ("u-status-1", Some(&profile)),
            ("u-status-2", Some(&profile)),
            ("x", None),
        ] {
            assert!(outlet.deliver(Utf8Bytes::from(frame), key));
        }
        // u went offline and back within the window: nothing about it; profile changes keep the newest.
        assert_eq!(
            queue.take_batch(1 << 16).unwrap().as_str(),
            "[v-off,u-status-2,x]"
        );
        // Three flips are one: the last.
        for frame in ["u-off", "u-on", "u-off"] {
            assert!(outlet.deliver(Utf8Bytes::from(frame), Some(&u)));
        }
        assert_eq!(queue.take_batch(1 << 16).unwrap().as_str(), "u-off");
        // A flip already read is past cancelling: the next one is sent.
        assert!(outlet.deliver(Utf8Bytes::from("u-on"), Some(&u)));
        assert_eq!(queue.take_batch(1 << 16).unwrap().as_str(), "u-on");
        assert_eq!(outlet.queued_bytes(), 0);
    }

    #[test]
    fn while_a_window_is_open_a_queued_frame_wakes_nobody_and_the_window_starts_with_its_first_frame(
    ) {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (outlet, queue) = Outlet::new(
            1 << 20,
            Liveness::new(Instant::now(), Duration::from_secs(5)),
            true,
        );
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(Arc::clone(&count));
        outlet.register(&Context::from_waker(&waker));
        assert_eq!(queue.waiting_since(), None);
        let before = Instant::now();
        assert!(outlet.deliver(Utf8Bytes::from("a"), None));
        let since = queue.waiting_since().expect("a frame waits");
        assert!(since >= before && since <= Instant::now());
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the first frame wakes the task"
        );
        queue.set_window_open(true);
        outlet.register(&Context::from_waker(&waker));
        for frame in ["b", "c", "d"] {
            assert!(outlet.deliver(Utf8Bytes::from(frame), None));
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the window's timer will");
        assert_eq!(
            queue.waiting_since(),
            Some(since),
            "the window began with the first"
        );
        queue.set_window_open(false);
        outlet.register(&Context::from_waker(&waker));
        assert!(outlet.deliver(Utf8Bytes::from("e"), None));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // An eviction always wakes.
        queue.set_window_open(true);
        outlet.register(&Context::from_waker(&waker));
        outlet.evict(close_code::SLOW_CONSUMER);
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
    }

    fn key(user: &str, kind: StateEvent) -> StateKey {
        StateKey {
            user_id: Arc::from(user),
            kind,
        }
    }

    fn drain(queue: &mut OutletQueue) -> Vec<String> {
        std::iter::from_fn(|| queue.try_recv().map(|f| f.to_string())).collect()
    }

    #[test]
    fn a_newer_state_replaces_the_queued_one_and_goes_to_the_back() {
        let (outlet, mut queue) = outlet(1 << 20);
        let u = key("u", StateEvent::PresenceChanged);
        let v = key("v", StateEvent::PresenceChanged);
        for (frame, key) in [
            ("u1", Some(&u)),
            ("u2", Some(&u)),
            ("v1", Some(&v)),
            ("x", None),
            ("u3", Some(&u)),
            ("v2", Some(&v)),
        ] {
            assert!(outlet.deliver(Utf8Bytes::from(frame), key));
        }
        // u1 was at the front of an empty queue, about to be written: it stays.
        assert_eq!(drain(&mut queue), ["u1", "x", "u3", "v2"]);
        // Once taken, a frame is past superseding; the next one queues normally.
        assert!(outlet.deliver(Utf8Bytes::from("u4"), Some(&u)));
        assert!(outlet.deliver(Utf8Bytes::from("u5"), Some(&u)));
        assert_eq!(drain(&mut queue), ["u4", "u5"]);
    }

    #[test]
    fn kinds_and_unkeyed_frames_never_replace_one_another() {
        let (outlet, mut queue) = outlet(1 << 20);
        let presence = key("u", StateEvent::PresenceChanged);
        let updated = key("u", StateEvent::Updated);
        outlet.deliver(Utf8Bytes::from("head"), None);
        outlet.deliver(Utf8Bytes::from("p1"), Some(&presence));
        outlet.deliver(Utf8Bytes::from("u1"), Some(&updated));
        outlet.deliver(Utf8Bytes::from("c1"), None);
        outlet.deliver(Utf8Bytes::from("c2"), None);
        outlet.deliver(Utf8Bytes::from("p2"), Some(&presence));
        assert_eq!(drain(&mut queue), ["head", "u1", "c1", "c2", "p2"]);
    }

    #[test]
    fn a_storm_about_one_user_never_fills_the_queue() {
        let frame = |i: usize| Utf8Bytes::from(format!("{i:0>1000}"));
        // Room for three frames: without superseding the fourth would evict.
        let (outlet, mut queue) = outlet(3000);
        let u = key("u", StateEvent::Updated);
        for i in 0..10_000 {
            assert!(outlet.deliver(frame(i), Some(&u)), "frame {i}");
        }
        assert_eq!(outlet.evicted(), None);
        {
            let frames = outlet.lock_frames();
            assert_eq!(frames.bytes, 2000);
            assert!(
                frames.queue.len() <= 2 * COMPACT_HOLES + 2,
                "{}",
                frames.queue.len()
            );
        }
        assert_eq!(
            drain(&mut queue),
            [frame(0).to_string(), frame(9999).to_string()]
        );
        // Unkeyed frames still count against the bound.
        for i in 0..3 {
            assert!(outlet.deliver(frame(i), None));
        }
        assert!(!outlet.deliver(frame(3), None));
        assert_eq!(outlet.evicted(), Some(close_code::SLOW_CONSUMER));
    }
}
