//! `Channel`: a channel handle as `client.channel()` returns it, with `watch`, `query`, `stopWatching`, `on`,
//! `off` and a `state` of members and watchers kept current by events. A thin surface over the registry's
//! `ChannelState` and the client's REST pipeline.

use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;

use crate::core::{client_code, ClientError};
use crate::web::events::EventSubscription;
use crate::web::fold::run_call;
use crate::web::js;
use crate::web::registry::ChannelState;
use crate::web::requests;
use crate::web::state::ClientState;

/// A channel: `client.channel(type, id, data)`.
#[wasm_bindgen]
pub struct Channel {
    channel: Rc<ChannelState>,
    client: Weak<ClientState>,
}

impl Channel {
    pub(crate) fn new(channel: Rc<ChannelState>, client: &Rc<ClientState>) -> Self {
        Channel {
            channel,
            client: Rc::downgrade(client),
        }
    }

    /// The handle of a channel of a `queryChannels` answer, as a JS value.
    pub(crate) fn handle(channel: Rc<ChannelState>, client: &Rc<ClientState>) -> JsValue {
        Channel::new(channel, client).into()
    }

    fn client(&self) -> Result<Rc<ClientState>, Promise> {
        self.client.upgrade().ok_or_else(|| {
            let gone = ClientError::new(
                client_code::NOT_CONNECTED,
                "the client of this channel no longer exists",
            );
            Promise::reject(&js::to_js_error(&gone))
        })
    }
}

#[wasm_bindgen]
impl Channel {
    #[wasm_bindgen(getter, js_name = type)]
    pub fn channel_type(&self) -> JsValue {
        JsValue::from_str(&self.channel.channel_type)
    }

    #[wasm_bindgen(getter)]
    pub fn id(&self) -> JsValue {
        js::string_or_undefined(self.channel.id().as_deref())
    }

    #[wasm_bindgen(getter)]
    pub fn cid(&self) -> JsValue {
        js::string_or_undefined(self.channel.cid().as_deref())
    }

    /// The channel object of the last answer (before any: the data given to `client.channel()`).
    #[wasm_bindgen(getter)]
    pub fn data(&self) -> JsValue {
        self.channel.data()
    }

    /// `{ members, watchers, watcher_count }`, members and watchers keyed by user id.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> JsValue {
        self.channel.state()
    }

    /// Gets or creates the channel and watches it: `watch({ presence: true })` → the channel answer.
    pub fn watch(&self, options: JsValue) -> Promise {
        match self.client() {
            Ok(client) => run_call(&client, requests::channel_query(&self.channel, &options)),
            Err(rejected) => rejected,
        }
    }

    /// Gets or creates the channel; watches only with `{ watch: true }`.
    pub fn query(&self, options: JsValue) -> Promise {
        let options = if options.is_object() {
            options
        } else {
            Object::new().into()
        };
        if js::get(&options, "watch").is_undefined() {
            js::set(&options, "watch", &JsValue::FALSE);
        }
        self.watch(options)
    }

    /// Stops recording the channel for recovery, drops it from the registry and tells the server.
    #[wasm_bindgen(js_name = stopWatching)]
    pub fn stop_watching(&self) -> Promise {
        let client = match self.client() {
            Ok(client) => client,
            Err(rejected) => return rejected,
        };
        let call = requests::stop_watching(&self.channel).map(|(id, call)| {
            client
                .session
                .borrow_mut()
                .stop_watching(&self.channel.channel_type, &id);
            // The registry forgets it: a later `client.channel()` of that cid starts afresh, and events about its
            // members stop updating it (this handle keeps its state, and a new `watch()` registers it again).
            client.channels.forget(&self.channel);
            call
        });
        run_call(&client, call)
    }

    /// Listeners of this channel's events (those carrying its `cid`).
    pub fn on(
        &self,
        type_or_handler: JsValue,
        handler: Option<Function>,
    ) -> Result<EventSubscription, JsValue> {
        self.channel.listeners.on(type_or_handler, handler)
    }

    pub fn off(&self, type_or_handler: JsValue, handler: Option<Function>) {
        self.channel.listeners.off(type_or_handler, handler);
    }
}
