//! `Channel`: a channel handle as `client.channel()` returns it, with `watch`, `stopWatching`, `on`, `off` and a
//! `state` of members and watchers kept current by events.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::{Array, Function, Object, Promise};
use wasm_bindgen::prelude::*;

use crate::core::{client_code, ClientError, Listeners, UserPresence};
use crate::web::client::{
    channel_query_call, subscribe, unsubscribe, ClientInner, EventSubscription, ListenerRegistry,
};
use crate::web::js::{self, wire};

pub(crate) struct ChannelInner {
    client: Weak<ClientInner>,
    pub(crate) channel_type: String,
    id: RefCell<Option<String>>,
    /// The data given to `client.channel()`, sent on creation.
    pub(crate) custom: JsValue,
    /// The channel object of the last answer.
    data: RefCell<JsValue>,
    /// `{ members, watchers, watcher_count }`.
    state: Object,
    pub(crate) listeners: RefCell<Listeners<Function>>,
}

impl ListenerRegistry for ChannelInner {
    fn listeners(&self) -> &RefCell<Listeners<Function>> {
        &self.listeners
    }
}

impl ChannelInner {
    pub(crate) fn new(
        client: Weak<ClientInner>,
        channel_type: String,
        id: Option<String>,
        custom: JsValue,
    ) -> Self {
        let state = Object::new();
        js::set(&state, "members", &Object::new());
        js::set(&state, "watchers", &Object::new());
        js::set(&state, "watcher_count", &JsValue::from_f64(0.0));
        ChannelInner {
            client,
            channel_type,
            id: RefCell::new(id),
            data: RefCell::new(custom.clone()),
            custom,
            state,
            listeners: RefCell::new(Listeners::default()),
        }
    }

    pub(crate) fn id(&self) -> Option<String> {
        self.id.borrow().clone()
    }

    pub(crate) fn cid(&self) -> Option<String> {
        self.id().map(|id| [&self.channel_type, ":", &id].concat())
    }

    /// Takes members, watchers and counts from a channel answer; returns the member users for the cache.
    pub(crate) fn apply_state(&self, answer: &JsValue, client: &ClientInner) -> Vec<UserPresence> {
        let Some(answer) = wire(answer) else {
            return Vec::new();
        };
        let channel = js::get(answer, "channel");
        if channel.is_object() {
            if self.id.borrow().is_none() {
                *self.id.borrow_mut() = js::get(&channel, "id").as_string();
            }
            *self.data.borrow_mut() = channel;
        }
        let members = Object::new();
        let users = Array::new();
        let list = js::get(answer, "members");
        if Array::is_array(&list) {
            for member in Array::from(&list).iter() {
                let user = js::get(&member, "user");
                let id = js::get(&member, "user_id")
                    .as_string()
                    .or_else(|| js::get(&user, "id").as_string());
                if let Some(id) = id {
                    js::set(&members, &id, &member);
                    users.push(&user);
                }
            }
        }
        js::set(&self.state, "members", &members);
        let list = js::get(answer, "watchers");
        if Array::is_array(&list) {
            let watchers = Object::new();
            for user in Array::from(&list).iter() {
                if let Some(id) = js::get(&user, "id").as_string() {
                    js::set(&watchers, &id, &user);
                }
            }
            js::set(&self.state, "watchers", &watchers);
        }
        let count = js::get(answer, "watcher_count");
        if count.as_f64().is_some() {
            js::set(&self.state, "watcher_count", &count);
        }
        client.store_users(&users.into())
    }

    /// A user event replaced the cached user: members and watchers follow.
    pub(crate) fn replace_user(&self, id: &str, user: &JsValue) {
        let member = js::get(&js::get(&self.state, "members"), id);
        if member.is_object() {
            js::set(&member, "user", user);
        }
        let watchers = js::get(&self.state, "watchers");
        if js::get(&watchers, id).is_object() {
            js::set(&watchers, id, user);
        }
    }

    pub(crate) fn apply_watching(&self, user: &JsValue, watcher_count: &JsValue, start: bool) {
        let watchers = js::get(&self.state, "watchers");
        if let Some(id) = js::get(user, "id").as_string() {
            if start {
                js::set(&watchers, &id, user);
            } else {
                let _ = js_sys::Reflect::delete_property(
                    watchers.unchecked_ref::<Object>(),
                    &JsValue::from_str(&id),
                );
            }
        }
        if watcher_count.as_f64().is_some() {
            js::set(&self.state, "watcher_count", watcher_count);
        }
    }
}

/// A channel: `client.channel(type, id, data)`.
#[wasm_bindgen]
pub struct Channel {
    inner: Rc<ChannelInner>,
}

impl Channel {
    pub(crate) fn from_inner(inner: Rc<ChannelInner>) -> Self {
        Channel { inner }
    }
}

fn client_gone() -> ClientError {
    ClientError::new(
        client_code::NOT_CONNECTED,
        "the client of this channel no longer exists",
    )
}

#[wasm_bindgen]
impl Channel {
    #[wasm_bindgen(getter, js_name = type)]
    pub fn channel_type(&self) -> JsValue {
        JsValue::from_str(&self.inner.channel_type)
    }

    #[wasm_bindgen(getter)]
    pub fn id(&self) -> JsValue {
        js::string_or_undefined(self.inner.id().as_deref())
    }

    #[wasm_bindgen(getter)]
    pub fn cid(&self) -> JsValue {
        js::string_or_undefined(self.inner.cid().as_deref())
    }

    /// The channel object of the last answer (before any: the data given to `client.channel()`).
    #[wasm_bindgen(getter)]
    pub fn data(&self) -> JsValue {
        self.inner.data.borrow().clone()
    }

    /// `{ members, watchers, watcher_count }`, members and watchers keyed by user id.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> JsValue {
        self.inner.state.clone().into()
    }

    /// Gets or creates the channel and watches it: `watch({ presence: true })` → the channel answer.
    pub fn watch(&self, options: JsValue) -> Promise {
        match self.inner.client.upgrade() {
            Some(client) => client.run_call(channel_query_call(&self.inner, &options)),
            None => Promise::reject(&js::to_js_error(&client_gone())),
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

    #[wasm_bindgen(js_name = stopWatching)]
    pub fn stop_watching(&self) -> Promise {
        match self.inner.client.upgrade() {
            Some(client) => client.run_call(client.stop_watching_call(&self.inner)),
            None => Promise::reject(&js::to_js_error(&client_gone())),
        }
    }

    /// Listeners of this channel's events (those carrying its `cid`).
    pub fn on(
        &self,
        type_or_handler: JsValue,
        handler: Option<Function>,
    ) -> Result<EventSubscription, JsValue> {
        subscribe(self.inner.clone(), type_or_handler, handler)
    }

    pub fn off(&self, type_or_handler: JsValue, handler: Option<Function>) {
        unsubscribe(&self.inner.listeners, type_or_handler, handler);
    }
}
