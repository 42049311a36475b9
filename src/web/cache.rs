//! The JS mirror of what the client knows about users: `client.state.users` (every user seen, by id, replaced
//! by each answer or event about them), `client.user` (the connected user as last known from the server, own
//! fields included) and the user details of each handshake. The core's `UserStore` holds the presence view beside
//! it.

use std::cell::RefCell;

use js_sys::Object;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::own_user::resent_on_reconnect;
use crate::web::frames::cache_event_user;
use crate::web::js;

pub struct UserCache {
    /// `client.state`: `{ users }`.
    state: Object,
    users: RefCell<Object>,
    /// `client.user`: the connected user, kept current from every source of truth (`me`, the user's own events,
    /// the answers of the user's own writes).
    user: RefCell<JsValue>,
    /// The user object given to `connectUser`, sent by the attempts of the first connection.
    details: RefCell<JsValue>,
}

impl UserCache {
    pub fn new() -> Self {
        let users = Object::new();
        let state = Object::new();
        js::set(&state, "users", &users);
        UserCache {
            state,
            users: RefCell::new(users),
            user: RefCell::new(JsValue::UNDEFINED),
            details: RefCell::new(JsValue::UNDEFINED),
        }
    }

    pub fn state(&self) -> JsValue {
        self.state.clone().into()
    }

    pub fn users(&self) -> Object {
        self.users.borrow().clone()
    }

    /// `client.user`.
    pub fn user(&self) -> JsValue {
        self.user.borrow().clone()
    }

    /// The handshake's `user_details`: what the app passed to `connectUser` until a connection succeeded, then
    /// the last known user without the fields a reconnect must leave to the server (`core::own_user`).
    pub fn details(&self, reconnect: bool) -> JsValue {
        if !reconnect {
            return self.details.borrow().clone();
        }
        let known = self.user();
        let details = Object::new();
        if let Some(known) = known.dyn_ref::<Object>() {
            for key in Object::keys(known).iter() {
                if let Some(key) = key.as_string().filter(|k| resent_on_reconnect(k)) {
                    js::set(&details, &key, &js::get(known, &key));
                }
            }
        }
        details.into()
    }

    /// `connectUser(user)`: the user is shown and re-sent as given until the server says more.
    pub fn connecting(&self, user: &JsValue) {
        *self.details.borrow_mut() = js::shallow_copy(user).into();
        *self.user.borrow_mut() = js::shallow_copy(user).into();
    }

    /// A failed `connectUser`: no user any more (what was seen stays).
    pub fn forget_user(&self) {
        *self.user.borrow_mut() = JsValue::UNDEFINED;
    }

    /// `disconnectUser()`: no user, and a fresh `state.users`.
    pub fn clear(&self) {
        self.forget_user();
        *self.details.borrow_mut() = JsValue::UNDEFINED;
        let fresh_users = Object::new();
        js::set(&self.state, "users", &fresh_users);
        *self.users.borrow_mut() = fresh_users;
    }

    /// An answer's object of user `id` replaces the cached one.
    pub fn store(&self, id: &str, user: &JsValue) {
        js::set(&self.users(), id, user);
    }

    /// The cached object of user `id` (`undefined` when unknown).
    pub fn cached(&self, id: &str) -> JsValue {
        js::get(&self.users(), id)
    }

    /// `user.presence.changed` / `user.updated`: the event's user replaces the cached one; for the connected user
    /// (`is_me`) it is merged into `client.user`.
    pub fn replace_event_user(&self, event: &JsValue, is_me: bool) {
        cache_event_user(&self.users.borrow(), event);
        if is_me {
            self.merge_me(&js::get(event, "user"));
        }
    }

    /// The connected user's object in the answer of their own write: merged into `client.user`, and it replaces
    /// the cache entry.
    pub fn written_me(&self, id: &str, user: &JsValue) {
        self.store(id, user);
        self.merge_me(user);
    }

    fn merge_me(&self, user: &JsValue) {
        let merged = js::shallow_copy(&self.user.borrow());
        if let Some(user) = user.dyn_ref::<Object>() {
            Object::assign(&merged, user);
        }
        *self.user.borrow_mut() = merged.into();
    }

    /// The connected user's own object (`me`) replaces `client.user` and its cache entry.
    pub fn replace_me(&self, id: &str, me: &JsValue) {
        *self.user.borrow_mut() = me.clone();
        js::set(&self.users(), id, me);
    }
}
