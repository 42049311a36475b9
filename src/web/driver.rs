//! The effect driver: the one loop that carries out the session's effects (open and close sockets, pings,
//! `connection.*` events, the `connectUser` outcome, recovery requests, what the user cache keeps of an answer)
//! and keeps the one timer armed for the session's next deadline; socket, timer and page events come back here
//! as session inputs with the time. What it holds between effects is in
//! [`DriverSlots`](crate::web::slots::DriverSlots), which only it uses.

use std::rc::Rc;

use js_sys::{Array, Date, Object, Promise};
use presence_protocol::codes::event_type;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::core::{
    client_code, ClientError, Effect, FrameVerdict, Millis, SocketId, Subscription, UserPresence,
    UsersAnswer,
};
use crate::web::credentials::Token;
use crate::web::diagnose::connect_failure;
use crate::web::events::local_event;
use crate::web::inbound;
use crate::web::js;
use crate::web::page::PageEvents;
use crate::web::reader::Inbound;
use crate::web::requests;
use crate::web::rest;
use crate::web::runtime::{drop_later, spawn, timeout};
use crate::web::slots::PendingConnect;
use crate::web::socket::Socket;
use crate::web::state::ClientState;

/// Starts connecting; the Promise settles with the first frame of the connection (or its error, a JS `Error`
/// with `code`). Nothing here waits, so the promise is handed back as it is.
pub fn connect(
    client: &Rc<ClientState>,
    user: JsValue,
    token: JsValue,
) -> Result<Promise, ClientError> {
    let (user_id, source) = requests::connect_arguments(&user, &token)?;
    let is_provider = matches!(source, Token::Provider { .. });
    client
        .session
        .borrow_mut()
        .connect(js::now(), &user_id, is_provider)?;
    client.credentials.set(source);
    client.cache.connecting(&user);
    let mut slots = None;
    let waiting = Promise::new(&mut |resolve, reject| slots = Some((resolve, reject)));
    if let Some((resolve, reject)) = slots {
        client.driver.await_connect(PendingConnect {
            promise: waiting.clone(),
            resolve,
            reject,
        });
    }
    install_page_events(client);
    pump(client);
    Ok(waiting)
}

/// `disconnectUser()`: closes with 1000, forgets the user, and waits (at most `timeout_ms`) for the close.
pub async fn disconnect(client: Rc<ClientState>, timeout_ms: u32) {
    // The session closes its current socket with 1000; that socket's close is awaited below.
    let closing = {
        let session = client.session.borrow();
        client.driver.ws_if(|id| session.is_current(id))
    };
    client.session.borrow_mut().disconnect(js::now());
    // The close (1000) and the rejection of a pending connect; the listeners are told once all is cleared.
    carry_out(&client, None, &[]);
    client.driver.clear();
    client.credentials.clear();
    client.cache.clear();
    client.channels.clear();
    client.changed();
    if let Some(ws) = closing {
        if ws.ready_state() != web_sys::WebSocket::CLOSED {
            // Resolved by the close event or, at the latest, by the timeout.
            let mut deadline = None;
            let closed = Promise::new(&mut |resolve, _| {
                let _ = ws.add_event_listener_with_callback("close", &resolve);
                deadline = Some(timeout(
                    timeout_ms,
                    Box::new(move || {
                        let _ = resolve.call0(&JsValue::UNDEFINED);
                    }),
                ));
            });
            let _ = JsFuture::from(closed).await;
            drop(deadline);
        }
    }
}

fn install_page_events(client: &Rc<ClientState>) {
    let wake = Rc::downgrade(client);
    let offline = Rc::downgrade(client);
    let hide = Rc::downgrade(client);
    let events = PageEvents::install(
        move || {
            if let Some(client) = wake.upgrade() {
                client.session.borrow_mut().handle_wake(js::now());
                pump(&client);
            }
        },
        move || {
            if let Some(client) = offline.upgrade() {
                client.session.borrow_mut().handle_offline(js::now());
                pump(&client);
            }
        },
        move || {
            if let Some(client) = hide.upgrade() {
                client.session.borrow_mut().handle_page_hide(js::now());
                pump(&client);
            }
        },
    );
    let old = client.driver.listen_to_page(events);
    drop(old);
}

/// The effect loop: carries out every pending effect of the session, re-arms the one timer, and tells the
/// `onStateChange` listeners.
pub fn pump(client: &Rc<ClientState>) {
    carry_out(client, None, &[]);
    client.changed();
}

/// Hands an answer's users to the session, which decides what the client keeps of them, then carries out its
/// decisions on their objects.
pub fn hand_over(
    client: &Rc<ClientState>,
    answer: UsersAnswer,
    users: Vec<(UserPresence, JsValue)>,
) {
    let (presences, objects): (Vec<_>, Vec<_>) = users.into_iter().unzip();
    client
        .session
        .borrow_mut()
        .handle_users_answer(answer, presences);
    pump_answer(client, &objects);
}

/// [`pump`] after a REST answer's users went into the session: `users` are their objects, in the answer's order,
/// which its `StoreUser` effects name.
fn pump_answer(client: &Rc<ClientState>, users: &[JsValue]) {
    carry_out(client, None, users);
    client.changed();
}

/// Carries out every pending effect and re-arms the timer. `frame` is the frame being handled, which a
/// `ConnectResolved` resolves `connectUser` with.
fn carry_out(client: &Rc<ClientState>, frame: Option<&JsValue>, users: &[JsValue]) {
    loop {
        let effect = client.session.borrow_mut().poll_effect();
        let Some(effect) = effect else {
            break;
        };
        run(client, effect, frame, users);
    }
    arm_timer(client);
}

fn arm_timer(client: &Rc<ClientState>) {
    let next = client.session.borrow().poll_timeout();
    let armed = client.driver.armed_at();
    if next == armed {
        return;
    }
    let replacement = next.map(|at| {
        let weak = Rc::downgrade(client);
        let delay = at.saturating_sub(js::now()).min(u64::from(u32::MAX / 2)) as u32;
        let timer = timeout(
            delay,
            Box::new(move || {
                if let Some(client) = weak.upgrade() {
                    let fired = client.driver.arm(None);
                    drop_later(Box::new(fired));
                    client.session.borrow_mut().handle_timeout(js::now());
                    pump(&client);
                }
            }),
        );
        (at, timer)
    });
    let old = client.driver.arm(replacement);
    drop(old);
}

fn run(client: &Rc<ClientState>, effect: Effect, frame: Option<&JsValue>, users: &[JsValue]) {
    match effect {
        Effect::OpenSocket {
            socket,
            reload_token,
            reconnect,
        } => {
            spawn(Box::pin(open_socket(
                client.clone(),
                socket,
                reload_token,
                reconnect,
            )));
        }
        Effect::CloseSocket {
            socket,
            code,
            reason,
        } => close_socket(client, socket, code, reason),
        Effect::Ping { socket } => {
            let frame = ping_frame(client);
            client.driver.send(socket, &frame);
        }
        Effect::ConnectionChanged { online } => {
            let event = local_event(event_type::CONNECTION_CHANGED);
            js::set(&event, "online", &JsValue::from_bool(online));
            client
                .listeners
                .emit(event_type::CONNECTION_CHANGED, &event.into());
        }
        Effect::ConnectResolved => {
            let pending = client.driver.take_pending_connect();
            if let Some(pending) = pending {
                let value = frame.cloned().unwrap_or(JsValue::UNDEFINED);
                let _ = pending.resolve.call1(&JsValue::UNDEFINED, &value);
            }
        }
        Effect::Diagnose => {
            let (client, epoch) = (client.clone(), client.session.borrow().epoch());
            spawn(Box::pin(async move {
                let Some(error) = connect_failure(&client).await else {
                    return;
                };
                // The connect it was asked for may have ended since (`disconnectUser`, a new `connectUser`).
                if client.session.borrow().epoch() == epoch {
                    client.session.borrow_mut().fail_connect(error);
                    pump(&client);
                }
            }));
        }
        Effect::ConnectRejected(mut error) => {
            if error.code == client_code::CONNECTION_FAILED
                && !error.message.starts_with("connectUser() failed")
            {
                // The session does not know the URL it tried; the one who reads the error needs it. (The
                // diagnosis's own messages name it already. `starts_with`, not `contains`: `str` searching
                // costs the bundle about 5 KB of gzip.)
                error.message = [
                    &error.message,
                    " (",
                    client.endpoints().ws_url(),
                    "/connect)",
                ]
                .concat();
            }
            let pending = client.driver.take_pending_connect();
            client.cache.forget_user();
            client.credentials.clear();
            let page = client.driver.listen_to_page(None);
            drop(page);
            if let Some(pending) = pending {
                let _ = pending
                    .reject
                    .call1(&JsValue::UNDEFINED, &js::to_js_error(&error));
            }
        }
        Effect::Resubscribe {
            generation,
            requests,
        } => {
            let epoch = client.session.borrow().epoch();
            for request in requests {
                resubscribe(client, generation, epoch, request);
            }
        }
        Effect::StoreUser { at, user_id, own } => {
            if let Some(user) = users.get(at) {
                if own {
                    client.cache.written_me(&user_id, user);
                } else {
                    client.cache.store(&user_id, user);
                }
            }
        }
        Effect::KeepCachedUser { user_id } => {
            // Channels show the newer cached object again instead of what the answer put there.
            let cached = client.cache.cached(&user_id);
            if cached.is_object() {
                for channel in client.channels.all() {
                    channel.replace_user(&user_id, &cached);
                }
            }
        }
        Effect::PresenceChanged { user_id } => {
            let user = js::get(&client.cache.users(), &user_id);
            let event = local_event(event_type::USER_PRESENCE_CHANGED);
            js::set(&event, "user", &user);
            js::set(&event, "created_at", &Date::new_0().to_iso_string());
            js::set(&event, "received_at", &Date::new_0());
            client
                .listeners
                .emit(event_type::USER_PRESENCE_CHANGED, &event.into());
        }
        Effect::ConnectionRecovered => {
            let event = local_event(event_type::CONNECTION_RECOVERED);
            client
                .listeners
                .emit(event_type::CONNECTION_RECOVERED, &event.into());
        }
    }
}

/// The keep-alive frame: `[{"type":"health.check","client_id":…}]`.
fn ping_frame(client: &ClientState) -> String {
    let ping = local_event(event_type::HEALTH_CHECK);
    let client_id = JsValue::from_str(client.session.borrow().client_id());
    js::set(&ping, "client_id", &client_id);
    js::to_json(&Array::of1(&ping))
}

fn close_socket(client: &ClientState, socket: SocketId, code: Option<u16>, reason: &str) {
    let current = client.driver.take_socket(socket);
    if let Some(current) = current {
        current.close(code, reason);
        // The handler running right now may be one of this socket's: release them once it has returned.
        drop_later(Box::new(current));
    }
}

async fn open_socket(
    client: Rc<ClientState>,
    socket: SocketId,
    reload_token: bool,
    reconnect: bool,
) {
    let token = client.credentials.current(reload_token).await;
    if !client.session.borrow().is_current(socket) {
        return;
    }
    let token = match token {
        Ok(token) => token.unwrap_or_default(),
        Err(error) => {
            client
                .session
                .borrow_mut()
                .handle_token_failure(js::now(), socket, error);
            pump(&client);
            return;
        }
    };
    let payload = Object::new();
    {
        let session = client.session.borrow();
        let user_id = JsValue::from_str(session.user_id().unwrap_or_default());
        js::set(&payload, "user_id", &user_id);
    }
    js::set(&payload, "user_details", &client.cache.details(reconnect));
    let request_id = client.session.borrow_mut().uuid();
    js::set(
        &payload,
        "client_request_id",
        &JsValue::from_str(&request_id),
    );
    let batch_ms = client.session.borrow().config().batch_ms;
    let url = client
        .endpoints()
        .connect(&js::to_json(&payload), &token, batch_ms);
    let (on_message, on_close, on_error) = (
        Rc::downgrade(&client),
        Rc::downgrade(&client),
        Rc::downgrade(&client),
    );
    let share_id = {
        let session = client.session.borrow();
        if session.config().share_connection {
            session.client_id().to_owned()
        } else {
            String::new()
        }
    };
    let opened = Socket::open(
        socket,
        &url,
        &share_id,
        move |inbound: &Inbound, now, last| {
            let client = on_message.upgrade()?;
            handle_frame(&client, socket, inbound, now, last)
        },
        move |event: web_sys::CloseEvent| {
            if let Some(client) = on_close.upgrade() {
                client
                    .session
                    .borrow_mut()
                    .handle_socket_closed(js::now(), socket, event.code());
                pump(&client);
            }
        },
        move |_| {
            if let Some(client) = on_error.upgrade() {
                client
                    .session
                    .borrow_mut()
                    .handle_socket_error(js::now(), socket);
                pump(&client);
            }
        },
    );
    match opened {
        Ok(opened) => {
            let old = client.driver.hold_socket(opened);
            drop_later(Box::new(old));
        }
        Err(thrown) => {
            let global = js_sys::global();
            if !js_sys::Reflect::has(&global, &JsValue::from_str("WebSocket")).unwrap_or(true) {
                client.session.borrow_mut().fail_connect(ClientError::new(
                    client_code::CONNECTION_FAILED,
                    "connectUser() failed: this platform has no WebSocket (Node.js before 22: run it with \
                     --experimental-websocket)",
                ));
            } else {
                js::log_error("presence-client: cannot open the WebSocket", &thrown);
                client
                    .session
                    .borrow_mut()
                    .handle_socket_error(js::now(), socket);
            }
            pump(&client);
        }
    }
}

/// The hot path: an event of a frame → session → (effects first: `connection.changed`, the `connectUser`
/// resolution) → cache and listeners; after the `last` event of the frame, the state-change listeners. Returns
/// the event's user as the session decoded it, whose strings the reader reuses.
fn handle_frame(
    client: &Rc<ClientState>,
    socket: SocketId,
    inbound: &Inbound,
    now: Millis,
    last: bool,
) -> Option<UserPresence> {
    let frame = inbound.frame();
    let verdict = client
        .session
        .borrow_mut()
        .handle_frame(now, socket, &frame);
    carry_out(client, Some(inbound.event()), &[]);
    if verdict != FrameVerdict::Ignore {
        inbound::dispatch(client, inbound, &frame, verdict == FrameVerdict::Dispatch);
    }
    // Once per frame (a batch's events all taken), after the cache took what it carries.
    if last {
        client.changed();
    }
    frame.user
}

/// Makes one recovery request on the new connection and reports its answer (none when it failed) to the
/// session.
fn resubscribe(client: &Rc<ClientState>, generation: u64, epoch: u64, request: Subscription) {
    let client = client.clone();
    let call = requests::resubscribe(request);
    spawn(Box::pin(async move {
        let users = match rest::call(client.clone(), call, epoch, |_, _, _, answer| answer).await {
            Ok(answer) => rest::recovered_users(&client, &answer),
            Err(_) => Vec::new(),
        };
        hand_over(&client, UsersAnswer::Recovery { generation }, users);
    }));
}
