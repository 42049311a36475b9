//! What the effect driver holds between effects: the pending `connectUser`, the socket, the one timer and the
//! page's listeners. The driver is their one user; these methods are the only way to change them.

use std::cell::RefCell;

use gloo_timers::callback::Timeout;
use js_sys::{Function, Promise};
use web_sys::WebSocket;

use crate::core::{Millis, SocketId};
use crate::web::page::PageEvents;
use crate::web::socket::Socket;

/// A `connectUser` Promise waiting for the first frame.
pub struct PendingConnect {
    pub promise: Promise,
    pub resolve: Function,
    pub reject: Function,
}

#[derive(Default)]
pub struct DriverSlots {
    pending_connect: RefCell<Option<PendingConnect>>,
    socket: RefCell<Option<Socket>>,
    /// The one timer, armed for the session's next deadline.
    timer: RefCell<Option<(Millis, Timeout)>>,
    page: RefCell<Option<PageEvents>>,
}

// Each method is one borrow of one slot, as the driver wrote it before they were gathered here: inlined
// (`#[inline(always)]`), as they were then. Called out of line they cost the bundle 62 B of gzip (measured).
impl DriverSlots {
    /// The Promise of a pending `connectUser`, which REST calls wait for.
    #[inline(always)]
    pub fn pending_connect(&self) -> Option<Promise> {
        self.pending_connect
            .borrow()
            .as_ref()
            .map(|p| p.promise.clone())
    }

    #[inline(always)]
    pub fn await_connect(&self, pending: PendingConnect) {
        *self.pending_connect.borrow_mut() = Some(pending);
    }

    /// The pending `connectUser`, to settle it (once).
    #[inline(always)]
    pub fn take_pending_connect(&self) -> Option<PendingConnect> {
        self.pending_connect.borrow_mut().take()
    }

    /// The held socket's WebSocket, when `keep` accepts its id.
    #[inline(always)]
    pub fn ws_if(&self, keep: impl FnOnce(SocketId) -> bool) -> Option<WebSocket> {
        self.socket
            .borrow()
            .as_ref()
            .filter(|s| keep(s.id))
            .map(Socket::ws)
    }

    /// Sends `text` on `socket` if it is the held one.
    #[inline(always)]
    pub fn send(&self, socket: SocketId, text: &str) {
        if let Some(current) = self.socket.borrow().as_ref().filter(|s| s.id == socket) {
            current.send(text);
        }
    }

    /// Takes `socket` out if it is the held one.
    #[inline(always)]
    pub fn take_socket(&self, socket: SocketId) -> Option<Socket> {
        let mut slot = self.socket.borrow_mut();
        if slot.as_ref().is_some_and(|s| s.id == socket) {
            slot.take()
        } else {
            None
        }
    }

    /// Holds a newly opened socket; returns the one it replaces.
    #[inline(always)]
    pub fn hold_socket(&self, socket: Socket) -> Option<Socket> {
        self.socket.replace(Some(socket))
    }

    /// When the armed timer fires, if one is.
    #[inline(always)]
    pub fn armed_at(&self) -> Option<Millis> {
        self.timer.borrow().as_ref().map(|(at, _)| *at)
    }

    /// Replaces the armed timer; returns the old one (dropping it disarms it).
    #[inline(always)]
    pub fn arm(&self, timer: Option<(Millis, Timeout)>) -> Option<(Millis, Timeout)> {
        self.timer.replace(timer)
    }

    /// Replaces the page's listeners; returns the old ones (dropping them removes them).
    #[inline(always)]
    pub fn listen_to_page(&self, events: Option<PageEvents>) -> Option<PageEvents> {
        self.page.replace(events)
    }

    /// `disconnectUser()`: the page's listeners, the timer and the socket go (in that order).
    #[inline(always)]
    pub fn clear(&self) {
        let page = self.page.take();
        drop(page);
        let timer = self.timer.take();
        drop(timer);
        let socket = self.socket.take();
        drop(socket);
    }
}
