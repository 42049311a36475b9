//! The JS mirror of what the client knows about users: `client.state.users` (every user seen, by id, replaced
//! by each answer or event about them), `client.user` (the connected user, own fields included) and the user
//! details sent again on every reconnect. The core's `UserStore` holds the presence view beside it.

use std::cell::RefCell;

use js_sys::{Array, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::UserPresence;
use crate::web::js::{self, wire};

pub struct UserCache {
    /// `client.state`: `{ users }`.
    state: Object,
    users: RefCell<Object>,
    user: RefCell<JsValue>,
    /// The user object given to `connectUser`, sent again on every reconnect.
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

    pub fn details(&self) -> JsValue {
        self.details.borrow().clone()
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

    /// Puts the users of an answer's list into `state.users`; returns their presence for the session.
    pub fn store_users(&self, users: &JsValue) -> Vec<UserPresence> {
        let mut presences = Vec::new();
        if !Array::is_array(users) {
            return presences;
        }
        let target = self.users();
        for user in Array::from(users).iter() {
            if let Some(presence) = wire(&user).and_then(UserPresence::decode) {
                js::set(&target, &presence.id, &user);
                presences.push(presence);
            }
        }
        presences
    }

    /// `user.presence.changed` / `user.updated` about `id`: the event's user replaces the cached one; for the
    /// connected user (`is_me`) it is merged into `client.user` and the re-sent details.
    pub fn replace_user(&self, id: &str, user: &JsValue, is_me: bool) {
        js::set(&self.users(), id, user);
        if !is_me {
            return;
        }
        let merged = js::shallow_copy(&self.user.borrow());
        if let Some(user) = user.dyn_ref::<Object>() {
            Object::assign(&merged, user);
        }
        *self.user.borrow_mut() = merged.into();
        // Keep what is re-sent on reconnect in step with the server (e.g. `invisible` changed by an upsert).
        let details = self.details();
        if let Some(details_obj) = details.dyn_ref::<Object>() {
            for key in Object::keys(details_obj).iter() {
                if let Some(key) = key.as_string() {
                    let value = js::get(user, &key);
                    if !value.is_undefined() && key != "id" {
                        js::set(&details, &key, &value);
                    }
                }
            }
        }
    }

    /// The connected user's own object (`me`) replaces `client.user` and its cache entry.
    pub fn replace_me(&self, id: &str, me: &JsValue) {
        *self.user.borrow_mut() = me.clone();
        js::set(&self.users(), id, me);
    }
}
