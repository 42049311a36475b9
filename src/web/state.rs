//! Everything one client holds, in one shared value: the session, the endpoints, the token source, the user
//! cache, the channel registry, the app's listeners, and the driver's slots (socket, timer, page events, the
//! pending `connectUser`). The behaviour lives in the modules that own each concern; this is only the data.

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::callback::Timeout;
use js_sys::{Function, Promise};

use crate::core::{Config, Endpoints, Millis, Session};
use crate::web::cache::UserCache;
use crate::web::credentials::Credentials;
use crate::web::events::Emitter;
use crate::web::page::PageEvents;
use crate::web::registry::ChannelRegistry;
use crate::web::socket::Socket;

/// A `connectUser` Promise waiting for the first frame.
pub struct PendingConnect {
    pub promise: Promise,
    pub resolve: Function,
    pub reject: Function,
}

pub struct ClientState {
    pub endpoints: Endpoints,
    /// The REST timeout.
    pub timeout_ms: u32,
    pub session: RefCell<Session>,
    pub listeners: Emitter,
    pub cache: UserCache,
    pub credentials: Credentials,
    pub channels: ChannelRegistry,
    pub pending_connect: RefCell<Option<PendingConnect>>,
    pub socket: RefCell<Option<Socket>>,
    /// The one timer, armed for the session's next deadline.
    pub timer: RefCell<Option<(Millis, Timeout)>>,
    pub page: RefCell<Option<PageEvents>>,
}

impl ClientState {
    pub fn new(endpoints: Endpoints, timeout_ms: u32, config: Config, seed: u64) -> Rc<Self> {
        Rc::new(ClientState {
            endpoints,
            timeout_ms,
            session: RefCell::new(Session::new(config, seed)),
            listeners: Emitter::default(),
            cache: UserCache::new(),
            credentials: Credentials::new(),
            channels: ChannelRegistry::default(),
            pending_connect: RefCell::new(None),
            socket: RefCell::new(None),
            timer: RefCell::new(None),
            page: RefCell::new(None),
        })
    }
}
