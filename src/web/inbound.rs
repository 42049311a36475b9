//! The inbound path: a socket's text frame is parsed by the JS engine, decoded by the core's rules
//! ([`Frame::decode`]), and, once the session has accepted it, mirrored into the user cache and the channel
//! registry and handed to the app's listeners (the client's, then the channel's for frames with a `cid`).

use js_sys::Date;
use presence_protocol::codes::event_type;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::Frame;
use crate::web::js::{self, Wire};
use crate::web::state::ClientState;

/// One parsed frame: the JS event and the fields its [`Frame`] borrows.
pub struct Inbound {
    event: JsValue,
    kind: String,
    connection_id: Option<String>,
}

impl Inbound {
    /// A text frame holding a JSON object with a string `type`; `None` for anything else (binary frames are not
    /// part of the protocol).
    pub fn parse(data: &JsValue) -> Option<Inbound> {
        if !data.is_string() {
            return None;
        }
        let event = js::json_parse(data).ok()?;
        let wire = js::wire(&event)?;
        let kind = wire.kind().as_string()?;
        let connection_id = wire.connection_id().as_string();
        Some(Inbound {
            event,
            kind,
            connection_id,
        })
    }

    pub fn event(&self) -> &JsValue {
        &self.event
    }

    /// What the session reads of it.
    pub fn frame(&self) -> Frame<'_> {
        Frame::decode(&self.kind, self.connection_id.as_deref(), self.wire())
    }

    fn wire(&self) -> &Wire {
        self.event.unchecked_ref()
    }
}

/// A frame the session accepted: the users it carries replace the cached ones (unless `fresh_user` is false:
/// the event's user is older than the cached one), watching events update their channel, then the app's
/// listeners get it (stamped with `received_at`).
pub fn dispatch(client: &ClientState, inbound: &Inbound, frame: &Frame<'_>, fresh_user: bool) {
    let wire = inbound.wire();
    if let Some(presence) = frame.user.as_ref().filter(|_| fresh_user) {
        let user = wire.user_value();
        let is_me = client.session.borrow().user_id() == Some(presence.id.as_str());
        client.cache.replace_user(&presence.id, &user, is_me);
        for channel in client.channels.all() {
            channel.replace_user(&presence.id, &user);
        }
    }
    if let Some(presence) = &frame.me {
        client.cache.replace_me(&presence.id, &wire.me_value());
    }
    let kind = frame.kind;
    let channel = || {
        wire.cid()
            .as_string()
            .and_then(|cid| client.channels.find(&cid))
    };
    if kind == event_type::USER_WATCHING_START || kind == event_type::USER_WATCHING_STOP {
        if let Some(channel) = channel() {
            channel.apply_watching(
                &wire.user_value(),
                &js::get(wire, "watcher_count"),
                kind == event_type::USER_WATCHING_START,
            );
        }
    }
    wire.set_received_at(&Date::new_0());
    client.listeners.emit(kind, &inbound.event);
    // Looked up after the client's listeners ran: one of them may have just made the channel.
    if let Some(channel) = channel() {
        channel.listeners.emit(kind, &inbound.event);
    }
}
