//! The socket after the upgrade: a refused handshake answered, or one accepted connection: registration with
//! the hub, then one task that reads (client frames and the liveness they show), writes (queued frames and
//! protocol pings) and watches eviction, the pong deadline and the client's silence, and how each way of ending
//! counts for presence.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use presence_protocol::codes::{close_code, event_type};
use presence_protocol::{Event, JsonMap};
use tokio::time::{Instant, Sleep};

use super::liveness::Liveness;
use super::outlet::{Outlet, OutletQueue};
use super::sockets::Outlets;
use crate::error::{Error, ErrorKind};
use crate::http::error::envelope;
use crate::model::event_time;
use crate::presence::{ConnId, Ending};
use crate::state::AppState;

/// Why the connection stopped.
enum Stop {
    /// The client closed the socket, with this code if it sent one.
    ClientClosed(Option<u16>),
    /// The socket failed or vanished without a close frame.
    Lost,
    /// The server closes with this code.
    Close(u16, &'static str),
}

/// What an accepted handshake gives: the user, the `user_details` to apply, and the batching window asked for.
pub(super) type Handshake = (String, JsonMap, Option<Duration>);

/// How long a connection that is being closed may take to get its close frame out before the socket is dropped.
const CLOSE_WRITE_BUDGET: Duration = Duration::from_secs(1);

/// An upgraded socket: the refusal of a handshake that failed authentication, or a connection of `user_id`
/// that applies `details` on registration. The socket lives in this future for the whole connection (no split
/// halves, no second task): an idle connection's cost is mostly the WebSocket's own buffers.
///
/// The future is written as an `async move` block over the arguments rather than as an `async fn`: an `async fn`
/// keeps its arguments twice (as they came and as the body's bindings), which for the WebSocket alone would add
/// a few hundred bytes to every connection's task. `auth` comes boxed for the same reason: the upgrade's task
/// holds it for the connection's life.
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub(super) fn serve(
    app: Arc<AppState>,
    sockets: Arc<Outlets>,
    auth: Box<Result<Handshake, Error>>,
    mut socket: WebSocket,
) -> impl Future<Output = ()> + Send {
    async move {
        let opened = Instant::now();
        let batch = auth.as_ref().as_ref().ok().and_then(|(_, _, batch)| *batch);
        let (outlet, mut queue) = Outlet::new(
            app.send_queue_bytes,
            Liveness::new(opened, app.ping_interval),
            batch.is_some(),
        );
        // The user and the details are scoped to the registration, so that the task keeps no room for them
        // while the connection runs; its id names the connection from here on (in the log too).
        let id = {
            let (user_id, details) = match *auth {
                Ok((user_id, details, _)) => (user_id, details),
                // Boxed, like the registration: a future is as large as its largest state, and these short-lived
                // ones would otherwise size every idle connection's task.
                Err(error) => return Box::pin(reject(socket, error)).await,
            };
            let id =
                match Box::pin(sockets.connect(&app.hub, &user_id, &details, Arc::clone(&outlet)))
                    .await
                {
                    Ok(id) => id,
                    Err(error) => return Box::pin(reject(socket, error)).await,
                };
            tracing::debug!(user = %user_id, conn = %id, "connected");
            id
        };
        let stop = {
            let next_ping = opened + app.ping_interval;
            // One timer for both deadlines: the next ping and the pong deadline.
            let mut timer = pin!(tokio::time::sleep_until(next_ping));
            let mut link = Link {
                app: &app,
                id: &id,
                socket: &mut socket,
                outlet: &outlet,
                queue: &mut queue,
                next_ping,
                client_heard: opened,
                ping_due: false,
                unflushed: false,
                held: 0,
                batch,
                batch_at: None,
                batch_due: false,
                greeted: false,
            };
            poll_fn(|cx| link.poll(cx, timer.as_mut())).await
        };
        // No frame is taken from the queue from here on.
        drop(queue);
        let (ending, close_frame) = match stop {
            Stop::ClientClosed(Some(close_code::NORMAL)) => (Ending::Explicit, None),
            Stop::ClientClosed(_) | Stop::Lost => (Ending::Abnormal, None),
            Stop::Close(code, reason) => (
                Ending::Abnormal,
                Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }),
            ),
        };
        tracing::debug!(conn = %id, ?ending, "disconnected");
        app.hub.disconnect(&id, ending);
        // A consumer closed as too slow may still be reading what it was sent: it gets as long as a ping has
        // to be answered to reach its close frame.
        let budget = match &close_frame {
            Some(frame) if frame.code == close_code::SLOW_CONSUMER => {
                app.pong_timeout.max(CLOSE_WRITE_BUDGET)
            }
            _ => CLOSE_WRITE_BUDGET,
        };
        // The close frame if the server closes; otherwise the echo of the client's close frame the WebSocket layer
        // has queued (or nothing, on a socket that is gone: closing fails at once).
        let close = async {
            match close_frame {
                Some(frame) => send_close(&mut socket, frame).await,
                None => {
                    let _ = socket.close().await;
                }
            }
        };
        let _ = Box::pin(tokio::time::timeout(budget, close)).await;
    }
}

/// Queues the close frame behind what the socket already holds, without waiting for that to go out first (the
/// write buffer keeps room for it), then flushes: a client that resumes reading gets its frames, then the close.
async fn send_close(socket: &mut WebSocket, frame: CloseFrame) {
    if socket.start_send_unpin(Message::Close(Some(frame))).is_ok() {
        let _ = poll_fn(|cx| socket.poll_flush_unpin(cx)).await;
    }
}

/// A registered connection while it runs: what [`Link::poll`] reads from and writes to.
struct Link<'a> {
    app: &'a AppState,
    id: &'a ConnId,
    socket: &'a mut WebSocket,
    outlet: &'a Arc<Outlet>,
    queue: &'a mut OutletQueue,
    /// When the next protocol ping is due: `opened + k·ping_interval`, the schedule [`Liveness`] measures
    /// against.
    next_ping: Instant,
    /// When the client last sent a frame of its own (text: its `health.check`), the opening if none. A browser
    /// answers pings below JavaScript, so pongs keep coming from a frozen tab; only the client's own frames show
    /// that it runs.
    client_heard: Instant,
    /// A ping is due and not yet handed to the socket.
    ping_due: bool,
    /// A frame was handed to the socket (or a pong owed) and not yet flushed.
    unflushed: bool,
    /// Bytes handed to the socket since its last complete flush: frames and the pongs owed for the client's
    /// pings. With the queued frames, what the server holds for a client that does not read.
    held: usize,
    /// The batching window the client asked for (`batch_ms`): frames queued within it go out as one.
    batch: Option<Duration>,
    /// When the open window ends.
    batch_at: Option<Instant>,
    /// The window ended: what is queued goes out, in batches of at most [`MAX_BATCH_BYTES`].
    batch_due: bool,
    /// The connection's first frame (its `health.check`, which a client's connect waits for) went out, alone
    /// and at once: batching starts after it.
    greeted: bool,
}

/// The timer wheel's resolution: a deadline fires within this after it.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// How much earlier than N ms a batching window closes: the timer's tick after the deadline, and the task's turn
/// on a worker among the others whose windows end with it. Measured with `bench/storm.mjs` (50 users × 1,000
/// watchers, nothing backing up, `batch_ms=10`; medians of 5 rounds): closed 1 ms early, the last watcher heard a
/// flip 10.5–11.2 ms later than with one event per frame; 2 ms early, 9.9 ms later.
const WINDOW_SLACK: Duration = Duration::from_millis(2);

/// The largest batch frame (unless one event alone is larger).
const MAX_BATCH_BYTES: usize = 64 * 1024;

impl Link<'_> {
    /// Runs the connection until it stops. Reading never waits for writing: a peer that stopped reading
    /// leaves frames unsent, but its eviction, its frames and the pong deadline are still seen, so the user
    /// still goes offline on time.
    fn poll(&mut self, cx: &mut Context<'_>, timer: Pin<&mut Sleep>) -> Poll<Stop> {
        self.outlet.register(cx);
        if let Some(code) = self.outlet.evicted() {
            return Poll::Ready(Stop::Close(code, eviction_reason(code)));
        }
        let liveness = self.outlet.liveness();
        let io_woke = self.outlet.take_io_wake();
        // A frame queued while no window is open opens one: it and whatever follows within the window go out
        // together when it ends (the timer, re-armed below, says when).
        let mut window_opened = false;
        if let Some((window, since)) = self.window_to_open() {
            // The window starts when its first frame was queued, not when the task got to run; and it closes
            // early by what passes between its deadline and the frame's send (the timer fires on the wheel's
            // next tick after a deadline, then the task waits for its turn), so the frame leaves within N ms.
            let armed = window
                .saturating_sub(WINDOW_SLACK)
                .max(TIMER_TICK.min(window));
            self.batch_at = Some(since + armed);
            self.queue.set_window_open(true);
            window_opened = true;
        }
        // The socket and the timer are polled only when one of them woke the task (their waker is the
        // outlet's), the timer alone when a window opened; only they change the deadlines.
        if io_woke || window_opened {
            let waker = Waker::from(Arc::clone(self.outlet));
            let mut io_cx = Context::from_waker(&waker);
            let stop = if io_woke {
                self.poll_io(&mut io_cx, liveness, timer)
            } else {
                self.run_timer(&mut io_cx, liveness, timer)
            };
            if let Poll::Ready(stop) = stop {
                return Poll::Ready(stop);
            }
        }
        loop {
            // Whatever it is made of, more than the send queue's bound held for a client that does not read
            // closes it as too slow; the WebSocket's write buffer keeps room for the close frame beyond this.
            if self.held.saturating_add(self.outlet.queued_bytes()) > self.app.send_queue_bytes {
                return Poll::Ready(Stop::Close(
                    close_code::SLOW_CONSUMER,
                    eviction_reason(close_code::SLOW_CONSUMER),
                ));
            }
            // Each frame is flushed before the next is taken: the WebSocket's write buffer keeps its capacity,
            // so it stays the size of one frame rather than of the largest batch.
            if self.unflushed {
                match self.socket.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        self.unflushed = false;
                        self.held = 0;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Stop::Lost),
                    Poll::Pending => break,
                }
            }
            // Ready before a frame is taken, so that no frame waits outside the queue.
            match self.socket.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Stop::Lost),
                Poll::Pending => break,
            }
            let frame = if self.ping_due {
                self.ping_due = false;
                Message::Ping(Default::default())
            } else if self.batch.is_some() && self.greeted {
                if !self.batch_due {
                    break;
                }
                match self.queue.take_batch(MAX_BATCH_BYTES) {
                    Some(batch) => Message::Text(batch),
                    None => {
                        self.batch_due = false;
                        // Closed before the last look below: a frame queued after it wakes the task.
                        self.queue.set_window_open(false);
                        break;
                    }
                }
            } else {
                match self.queue.try_recv() {
                    Some(frame) => {
                        self.greeted = true;
                        Message::Text(frame)
                    }
                    None => break,
                }
            };
            self.held += frame_size(&frame);
            if self.socket.start_send_unpin(frame).is_err() {
                return Poll::Ready(Stop::Lost);
            }
            self.unflushed = true;
        }
        // Frames that came behind the first one wait for a window, which the next pass opens.
        if self.window_to_open().is_some() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// The batching window to open now, and since when its first frame waits: the client asked for batches, its
    /// first frame went out, no window is open or due, and a frame waits.
    fn window_to_open(&self) -> Option<(Duration, Instant)> {
        let window = self
            .batch
            .filter(|_| self.greeted && self.batch_at.is_none() && !self.batch_due)?;
        Some((window, self.queue.waiting_since()?))
    }

    /// Reads the socket until it is pending and runs the timer.
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        liveness: &Liveness,
        timer: Pin<&mut Sleep>,
    ) -> Poll<Stop> {
        while let Poll::Ready(msg) = self.socket.poll_next_unpin(cx) {
            let msg = match msg {
                Some(Ok(msg)) => msg,
                // A frame over the size limit or breaking the protocol; on a dead socket the close frame simply
                // fails to go out.
                Some(Err(e)) if is_too_big(&e) => {
                    return Poll::Ready(Stop::Close(
                        close_code::MESSAGE_TOO_BIG,
                        "frames and messages are limited to 64 KiB",
                    ))
                }
                Some(Err(_)) => {
                    return Poll::Ready(Stop::Close(close_code::BAD_FRAME, "unreadable frame"))
                }
                None => return Poll::Ready(Stop::Lost),
            };
            liveness.heard(Instant::now());
            match msg {
                Message::Text(text) => {
                    self.client_heard = Instant::now();
                    if let Err(reason) = client_frame(self.app, self.id, text.as_str()) {
                        return Poll::Ready(Stop::Close(close_code::BAD_FRAME, reason));
                    }
                }
                Message::Binary(_) => {
                    return Poll::Ready(Stop::Close(
                        close_code::BAD_FRAME,
                        "binary frames are not accepted",
                    ))
                }
                Message::Ping(payload) => {
                    // The WebSocket queues the pong itself; it is owed until a flush gets it out.
                    self.held += frame_size(&Message::Ping(payload));
                    self.unflushed = true;
                }
                Message::Pong(_) => {}
                Message::Close(frame) => {
                    return Poll::Ready(Stop::ClientClosed(frame.map(|f| f.code)))
                }
            }
        }
        self.run_timer(cx, liveness, timer)
    }

    /// Runs the timer: the batching window's end, the next ping, the pong deadline, the client's silence.
    fn run_timer(
        &mut self,
        cx: &mut Context<'_>,
        liveness: &Liveness,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<Stop> {
        loop {
            let pong_deadline = liveness.last_heard() + self.app.pong_timeout;
            let silence_deadline = self.app.client_silence.map(|s| self.client_heard + s);
            let deadline = silence_deadline.map_or(pong_deadline, |s| s.min(pong_deadline));
            let deadline = deadline.min(self.next_ping);
            let deadline = self.batch_at.map_or(deadline, |at| at.min(deadline));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            if Some(deadline) == self.batch_at {
                self.batch_at = None;
                self.batch_due = true;
                continue;
            }
            if deadline == pong_deadline {
                return Poll::Ready(Stop::Close(
                    close_code::PONG_TIMEOUT,
                    "no pong within the timeout",
                ));
            }
            if Some(deadline) == silence_deadline {
                return Poll::Ready(Stop::Close(
                    close_code::CLIENT_SILENCE,
                    "no health.check from the client within the silence limit",
                ));
            }
            // One ping however many were missed, then the next one on the schedule.
            self.ping_due = true;
            self.next_ping += self.app.ping_interval;
            let now = Instant::now();
            while self.next_ping <= now {
                self.next_ping += self.app.ping_interval;
            }
        }
        Poll::Pending
    }
}

/// Bytes a frame takes on the wire from the server (unmasked): its payload and its header.
fn frame_size(frame: &Message) -> usize {
    let payload = match frame {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 125,
    };
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    payload + header
}

/// Whether a read failed on a frame or message over the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// A text frame from the client. The only one with meaning is the keep-alive `health.check`.
fn client_frame(app: &AppState, conn: &ConnId, text: &str) -> Result<(), &'static str> {
    if read_client_frame(text)? == ClientFrame::HealthCheck {
        app.hub.health_check(conn);
    }
    Ok(())
}

/// What a client's text frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame {
    /// The keep-alive `health.check`.
    HealthCheck,
    /// Other JSON: ignored.
    Ignored,
}

/// Reads a client's text frame: a `health.check` is sent as a one-element array (or a bare object); other JSON is
/// ignored, anything else is refused with the reason the close frame gives.
pub fn read_client_frame(text: &str) -> Result<ClientFrame, &'static str> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "frames must be JSON")?;
    let first = match &value {
        serde_json::Value::Array(items) => items.first(),
        other => Some(other),
    };
    if first.and_then(|f| f.get("type")).and_then(|t| t.as_str()) == Some(event_type::HEALTH_CHECK)
    {
        Ok(ClientFrame::HealthCheck)
    } else {
        Ok(ClientFrame::Ignored)
    }
}

/// Why the server closes a connection it evicted, by close code.
fn eviction_reason(code: u16) -> &'static str {
    match code {
        close_code::SLOW_CONSUMER => "the send queue is full: frames were not read fast enough",
        close_code::PONG_TIMEOUT => {
            "a ping went unanswered; a new connection of the user took this one's place"
        }
        close_code::GOING_AWAY => "the server is shutting down",
        _ => "closed by the server",
    }
}

/// A refused connection: the upgrade completes, one `connection.error` frame explains, then the close: 1000 (a
/// permanent refusal, clients do not retry) unless the refusal is temporary: the per-user connection cap closes
/// with 1013 and a server failure (its database is unwritable) with 1011, so that clients retry with backoff.
pub(super) async fn reject(mut socket: WebSocket, error: Error) {
    let (code, reason) = match error.kind() {
        ErrorKind::TooManyConnections => (
            close_code::TRY_AGAIN_LATER,
            "too many connections for this user; try again later",
        ),
        ErrorKind::Internal => (
            close_code::INTERNAL_ERROR,
            "the server failed; try again later",
        ),
        _ => (close_code::NORMAL, "connection refused"),
    };
    let ev = Event {
        kind: event_type::CONNECTION_ERROR.to_string(),
        created_at: Some(event_time(chrono::Utc::now())),
        connection_id: Some(String::new()),
        error: Some(envelope(&error)),
        ..Event::default()
    };
    let text = serde_json::to_string(&ev).unwrap_or_default();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}
