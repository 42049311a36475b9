//! The inbound path: a socket's text frame is parsed by the JS engine (`frames.js`, the socket's message
//! handler), crosses into the module once with the fields the session decides on, is decoded by the core's rules
//! ([`Frame::decode`]), and, once the session has accepted it, mirrored into the user cache and the channel
//! registry and handed to the app's listeners (the client's, then the channel's for frames with a `cid`).
//!
//! The hot frame (`user.presence.changed`) makes no other call into JS than the cache entry and the listeners.

use presence_protocol::codes::event_type;

use crate::core::Frame;
use crate::web::js;
use crate::web::reader::Inbound;
use crate::web::state::ClientState;

/// A frame the session accepted: the users it carries replace the cached ones (unless `fresh_user` is false:
/// the event's user is older than the cached one), watching events update their channel, then the app's
/// listeners get it (stamped with `received_at` by the handler).
pub fn dispatch(client: &ClientState, inbound: &Inbound, frame: &Frame<'_>, fresh_user: bool) {
    let wire = inbound.wire();
    if let Some(presence) = frame.user.as_ref().filter(|_| fresh_user) {
        let is_me = client.session.borrow().user_id() == Some(presence.id.as_str());
        client.cache.replace_event_user(inbound.event(), is_me);
        if !client.channels.is_empty() {
            let user = wire.user_value();
            for channel in client.channels.all() {
                channel.replace_user(&presence.id, &user);
            }
        }
    }
    // An outdated `me` (a health check written before an update the client already holds) rolls nothing back.
    let fresh_me = frame
        .me
        .as_ref()
        .filter(|me| client.session.borrow().holds(me));
    if let Some(presence) = fresh_me {
        client.cache.replace_me(&presence.id, &wire.me_value());
    }
    let kind = frame.kind;
    let channel = || {
        if client.channels.is_empty() {
            return None;
        }
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
    client.listeners.emit(kind, inbound.event());
    // Looked up after the client's listeners ran: one of them may have just made the channel.
    if let Some(channel) = channel() {
        channel.listeners.emit(kind, inbound.event());
    }
}
