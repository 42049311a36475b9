//! Everything one client holds, in one shared value, each concern behind the type that owns it: the session
//! (changed only through its inputs), the app's listeners, the user cache, the token source, the channel
//! registry, and the driver's slots (socket, timer, page events, the pending `connectUser`), which only the
//! driver changes. The endpoints and the REST timeout are set once.

use std::cell::RefCell;
use std::rc::Rc;

use crate::core::{Config, Endpoints, Session};
use crate::web::cache::UserCache;
use crate::web::credentials::Credentials;
use crate::web::events::Emitter;
use crate::web::registry::ChannelRegistry;
use crate::web::slots::DriverSlots;

pub struct ClientState {
    endpoints: Endpoints,
    /// The REST timeout.
    timeout_ms: u32,
    pub session: RefCell<Session>,
    pub listeners: Emitter,
    /// `onStateChange` listeners: told (with no argument) that what the client shows may have changed.
    pub changes: Emitter,
    pub cache: UserCache,
    pub credentials: Credentials,
    pub channels: ChannelRegistry,
    pub driver: DriverSlots,
}

impl ClientState {
    pub fn new(endpoints: Endpoints, timeout_ms: u32, config: Config, seed: u64) -> Rc<Self> {
        Rc::new(ClientState {
            endpoints,
            timeout_ms,
            session: RefCell::new(Session::new(config, seed)),
            listeners: Emitter::default(),
            changes: Emitter::default(),
            cache: UserCache::new(),
            credentials: Credentials::new(),
            channels: ChannelRegistry::default(),
            driver: DriverSlots::default(),
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The REST timeout.
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    /// Tells the `onStateChange` listeners that the users, the connected user or the connection may have
    /// changed. Called at the end of each change, so a listener reads a consistent client.
    pub fn changed(&self) {
        self.changes.emit("", &wasm_bindgen::JsValue::UNDEFINED);
    }
}
