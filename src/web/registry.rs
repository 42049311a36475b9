//! The channel registry: one `ChannelState` per cid, shared by every `client.channel()` call and answer naming
//! it, holding the channel's data, its `state` of members and watchers kept current by events, and its
//! listeners.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::UserPresence;
use crate::web::events::Emitter;
use crate::web::js::{self, wire};

pub struct ChannelState {
    pub channel_type: String,
    id: RefCell<Option<String>>,
    /// The data given to `client.channel()`, sent on creation.
    pub custom: JsValue,
    /// The channel object of the last answer.
    data: RefCell<JsValue>,
    /// `{ members, watchers, watcher_count }`.
    state: Object,
    pub listeners: Emitter,
}

impl ChannelState {
    fn new(channel_type: String, id: Option<String>, custom: JsValue) -> Self {
        let state = Object::new();
        js::set(&state, "members", &Object::new());
        js::set(&state, "watchers", &Object::new());
        js::set(&state, "watcher_count", &JsValue::from_f64(0.0));
        ChannelState {
            channel_type,
            id: RefCell::new(id),
            data: RefCell::new(custom.clone()),
            custom,
            state,
            listeners: Emitter::default(),
        }
    }

    /// `None` for a distinct channel before its first answer (the server picks its id).
    pub fn id(&self) -> Option<String> {
        self.id.borrow().clone()
    }

    pub fn cid(&self) -> Option<String> {
        self.id().map(|id| [&self.channel_type, ":", &id].concat())
    }

    pub fn data(&self) -> JsValue {
        self.data.borrow().clone()
    }

    pub fn state(&self) -> JsValue {
        self.state.clone().into()
    }

    /// Takes members, watchers and counts from a channel answer; returns the member users (with an id) and their
    /// objects, for the user cache.
    pub fn apply_answer(&self, answer: &JsValue) -> Vec<(UserPresence, JsValue)> {
        let mut users = Vec::new();
        let Some(answer) = wire(answer) else {
            return users;
        };
        let channel = js::get(answer, "channel");
        if channel.is_object() {
            if self.id.borrow().is_none() {
                *self.id.borrow_mut() = js::get(&channel, "id").as_string();
            }
            *self.data.borrow_mut() = channel;
        }
        let members = Object::new();
        let list = js::get(answer, "members");
        if Array::is_array(&list) {
            for member in Array::from(&list).iter() {
                let user = js::get(&member, "user");
                let presence = wire(&user).and_then(UserPresence::decode);
                let id = js::get(&member, "user_id")
                    .as_string()
                    .or_else(|| presence.as_ref().map(|p| p.id.clone()));
                if let Some(id) = id {
                    js::set(&members, &id, &member);
                }
                if let Some(presence) = presence {
                    users.push((presence, user));
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
        users
    }

    /// A user event replaced the cached user: members and watchers follow.
    pub fn replace_user(&self, id: &str, user: &JsValue) {
        let member = js::get(&js::get(&self.state, "members"), id);
        if member.is_object() {
            js::set(&member, "user", user);
        }
        let watchers = js::get(&self.state, "watchers");
        if js::get(&watchers, id).is_object() {
            js::set(&watchers, id, user);
        }
    }

    /// `user.watching.start` / `user.watching.stop`.
    pub fn apply_watching(&self, user: &JsValue, watcher_count: &JsValue, start: bool) {
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

/// The channels of one client by cid: few per client, so a list.
#[derive(Default)]
pub struct ChannelRegistry {
    channels: RefCell<Vec<(String, Rc<ChannelState>)>>,
}

impl ChannelRegistry {
    pub fn find(&self, cid: &str) -> Option<Rc<ChannelState>> {
        let channels = self.channels.borrow();
        channels
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, channel)| channel.clone())
    }

    /// The channel of `type:id`, created on first use; a distinct channel (no id) is registered once its answer
    /// names it.
    pub fn get_or_create(
        &self,
        channel_type: String,
        id: Option<String>,
        data: JsValue,
    ) -> Rc<ChannelState> {
        if let Some(id) = &id {
            let cid = [&channel_type, ":", id].concat();
            if let Some(existing) = self.find(&cid) {
                return existing;
            }
        }
        let channel = Rc::new(ChannelState::new(channel_type, id, data));
        self.register(&channel);
        channel
    }

    /// Records a channel that has an id, unless its cid is known already.
    pub fn register(&self, channel: &Rc<ChannelState>) {
        if let Some(cid) = channel.cid() {
            if self.find(&cid).is_none() {
                self.channels.borrow_mut().push((cid, channel.clone()));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.borrow().is_empty()
    }

    /// Every channel, for work that calls out (no borrow is held meanwhile).
    pub fn all(&self) -> Vec<Rc<ChannelState>> {
        let channels = self.channels.borrow();
        if channels.is_empty() {
            Vec::new()
        } else {
            channels.iter().map(|(_, c)| c.clone()).collect()
        }
    }

    /// Drops `channel` (that very state: a newer one of the same cid stays).
    pub fn forget(&self, channel: &Rc<ChannelState>) {
        let forgotten = {
            let mut channels = self.channels.borrow_mut();
            channels
                .iter()
                .position(|(_, c)| Rc::ptr_eq(c, channel))
                .map(|at| channels.remove(at))
        };
        drop(forgotten);
    }

    pub fn clear(&self) {
        let channels = std::mem::take(&mut *self.channels.borrow_mut());
        drop(channels);
    }
}
