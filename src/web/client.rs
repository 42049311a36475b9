//! `Client`: the exported entry point, mirroring the presence subset of `stream-chat`'s `StreamChat`.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Object, Promise};
use presence_protocol::codes::error_code;
use presence_protocol::codes::event_type;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::core::{
    client_code, dispatch, ClientError, Config, Effect, Frame, FrameVerdict, ListenerId, Listeners,
    Session, SocketId, Subscription, UserPresence,
};
use crate::web::channel::{Channel, ChannelInner};
use crate::web::http::{self, Call, CLIENT_NAME};
use crate::web::js::{self, wire};
use crate::web::page::PageEvents;
use crate::web::socket::Socket;
use crate::web::{drop_later, promise, spawn, timeout};

const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// The header segment of every HS256 JWT, and so of dev tokens.
const DEV_TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

enum Token {
    None,
    Static(String),
    Provider {
        provider: Function,
        current: Option<String>,
    },
}

struct PendingConnect {
    promise: Promise,
    resolve: Function,
    reject: Function,
}

pub(crate) struct ClientInner {
    me: Weak<ClientInner>,
    api_key: String,
    base_url: String,
    ws_url: String,
    timeout_ms: u32,
    session: RefCell<Session>,
    listeners: RefCell<Listeners<Function>>,
    /// `client.state`: `{ users }`.
    state: Object,
    users: RefCell<Object>,
    user: RefCell<JsValue>,
    /// The user object given to `connectUser`, sent again on every reconnect.
    user_details: RefCell<JsValue>,
    token: RefCell<Token>,
    socket: RefCell<Option<Socket>>,
    timer: RefCell<Option<(u64, Timeout)>>,
    page: RefCell<Option<PageEvents>>,
    pending_connect: RefCell<Option<PendingConnect>>,
    /// Channels by cid: few per client, so a list.
    channels: RefCell<Vec<(String, Rc<ChannelInner>)>>,
}

/// The presence client: `new Client(apiKey, { baseURL })`.
#[wasm_bindgen]
pub struct Client {
    inner: Rc<ClientInner>,
}

/// What `on()` returns: `{ unsubscribe() }`.
#[wasm_bindgen]
pub struct EventSubscription {
    registry: Weak<dyn ListenerRegistry>,
    id: ListenerId,
}

#[wasm_bindgen]
impl EventSubscription {
    pub fn unsubscribe(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove_listener(self.id);
        }
    }
}

/// Something `on()` registers with: the client or a channel.
pub(crate) trait ListenerRegistry {
    fn listeners(&self) -> &RefCell<Listeners<Function>>;
    fn remove_listener(&self, id: ListenerId) {
        self.listeners().borrow_mut().remove(id);
    }
}

impl ListenerRegistry for ClientInner {
    fn listeners(&self) -> &RefCell<Listeners<Function>> {
        &self.listeners
    }
}

/// `on(handler)` / `on(type, handler)`.
pub(crate) fn subscribe(
    owner: Rc<dyn ListenerRegistry>,
    type_or_handler: JsValue,
    handler: Option<Function>,
) -> Result<EventSubscription, JsValue> {
    let (event_type, handler) = match (type_or_handler.as_string(), handler) {
        (Some(event_type), Some(handler)) => (Some(event_type), handler),
        (None, None) => match type_or_handler.dyn_into::<Function>() {
            Ok(handler) => (None, handler),
            Err(_) => {
                return Err(js::to_js_error(&js::invalid(
                    "on() needs a handler function",
                )))
            }
        },
        _ => {
            return Err(js::to_js_error(&js::invalid(
                "on() takes (handler) or (eventType, handler)",
            )))
        }
    };
    let id = owner
        .listeners()
        .borrow_mut()
        .add(event_type.as_deref(), handler);
    Ok(EventSubscription {
        registry: Rc::downgrade(&owner),
        id,
    })
}

/// `off(handler)` / `off(type, handler)`.
pub(crate) fn unsubscribe(
    registry: &RefCell<Listeners<Function>>,
    type_or_handler: JsValue,
    handler: Option<Function>,
) {
    let (event_type, handler) = match (type_or_handler.as_string(), handler) {
        (Some(event_type), Some(handler)) => (Some(event_type), handler),
        (None, None) => match type_or_handler.dyn_into::<Function>() {
            Ok(handler) => (None, handler),
            Err(_) => return,
        },
        _ => return,
    };
    let target: &JsValue = handler.as_ref();
    registry
        .borrow_mut()
        .remove_matching(event_type.as_deref(), |l| {
            AsRef::<JsValue>::as_ref(l) == target
        });
}

/// Calls the listeners of `event_type` with `event`; a throwing listener is logged and the others still run.
pub(crate) fn emit(registry: &RefCell<Listeners<Function>>, event_type: &str, event: &JsValue) {
    let failures = dispatch(registry, event_type, event, |listener, event| {
        listener.call1(&JsValue::UNDEFINED, event).map(|_| ())
    });
    for failure in failures {
        js::log_error("presence-client: an event listener threw", &failure);
    }
}

fn local_event(kind: &str) -> Object {
    let event = Object::new();
    js::set(&event, "type", &JsValue::from_str(kind));
    event
}

fn option_u64(options: &JsValue, key: &str) -> Option<u64> {
    js::get(options, key)
        .as_f64()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
}

impl Client {
    fn run_call(&self, call: Result<RestCall, ClientError>) -> Promise {
        self.inner.run_call(call)
    }
}

#[wasm_bindgen]
impl Client {
    /// `new Client(apiKey, { baseURL, timeout, lastActiveRefreshInterval })`.
    #[wasm_bindgen(constructor)]
    pub fn new(api_key: JsValue, options: JsValue) -> Result<Client, JsValue> {
        let api_key = api_key
            .as_string()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| js::to_js_error(&js::invalid("new Client() needs an API key string")))?;
        let base_url = js::get(&options, "baseURL")
            .as_string()
            .unwrap_or_else(|| "https://chat.stream-io-api.com".to_string());
        let base_url = without_trailing_slashes(base_url);
        let ws_url = js::get(&options, "wsBaseURL")
            .as_string()
            .map(without_trailing_slashes)
            .unwrap_or_else(|| match base_url.strip_prefix("http") {
                Some(rest) => ["ws", rest].concat(),
                None => base_url.clone(),
            });
        let mut config = Config::default();
        if let Some(refresh) = option_u64(&options, "lastActiveRefreshInterval").filter(|v| *v > 0)
        {
            config.last_active_refresh = refresh;
        }
        if let Some(budget) = option_u64(&options, "connectTimeout").filter(|v| *v > 0) {
            config.connect_budget = budget;
        }
        let timeout_ms = option_u64(&options, "timeout")
            .filter(|v| *v > 0)
            .map_or(DEFAULT_TIMEOUT_MS, |v| v.min(u64::from(u32::MAX)) as u32);
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64 ^ js::now();
        let users = Object::new();
        let state = Object::new();
        js::set(&state, "users", &users);
        let inner = Rc::new_cyclic(|me| ClientInner {
            me: me.clone(),
            api_key,
            base_url,
            ws_url,
            timeout_ms,
            session: RefCell::new(Session::new(config, seed)),
            listeners: RefCell::new(Listeners::default()),
            state,
            users: RefCell::new(users),
            user: RefCell::new(JsValue::UNDEFINED),
            user_details: RefCell::new(JsValue::UNDEFINED),
            token: RefCell::new(Token::None),
            socket: RefCell::new(None),
            timer: RefCell::new(None),
            page: RefCell::new(None),
            pending_connect: RefCell::new(None),
            channels: RefCell::new(Vec::new()),
        });
        Ok(Client { inner })
    }

    /// The connected user (own fields included), kept current by events; `undefined` when disconnected.
    #[wasm_bindgen(getter)]
    pub fn user(&self) -> JsValue {
        self.inner.user.borrow().clone()
    }

    #[wasm_bindgen(getter, js_name = userID)]
    pub fn user_id(&self) -> JsValue {
        js::string_or_undefined(self.inner.session.borrow().user_id())
    }

    /// `{ users }`: every user the client has seen, by id, replaced by each event about them.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> JsValue {
        self.inner.state.clone().into()
    }

    /// The id the server gave the open connection.
    #[wasm_bindgen(getter, js_name = connectionId)]
    pub fn connection_id(&self) -> JsValue {
        js::string_or_undefined(self.inner.session.borrow().connection_id())
    }

    /// A development token (accepted only by servers with auth checks disabled).
    #[wasm_bindgen(js_name = devToken)]
    pub fn dev_token(&self, user_id: JsValue) -> Result<JsValue, JsValue> {
        let user_id = user_id
            .as_string()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| js::to_js_error(&js::invalid("devToken() needs a user id string")))?;
        let payload = Object::new();
        js::set(&payload, "user_id", &JsValue::from_str(&user_id));
        // Like the reference SDK: one byte per UTF-16 unit, standard base64 with padding.
        let bytes: String = js::to_json(&payload)
            .encode_utf16()
            .map(|unit| char::from((unit & 0xff) as u8))
            .collect();
        let encoded =
            js::btoa(&bytes).map_err(|e| js::to_js_error(&js::invalid(js::describe(&e))))?;
        let token = [DEV_TOKEN_HEADER, ".", &encoded, ".devtoken"].concat();
        Ok(JsValue::from_str(&token))
    }

    /// Connects `user` with a token or an async token provider; resolves to the first `health.check` event.
    #[wasm_bindgen(js_name = connectUser)]
    pub fn connect_user(&self, user: JsValue, token: JsValue) -> Promise {
        self.inner
            .connect_user(user, token)
            .unwrap_or_else(|error| Promise::reject(&js::to_js_error(&error)))
    }

    /// Closes the connection with 1000 (peers see the user offline at once) and forgets the user.
    #[wasm_bindgen(js_name = disconnectUser)]
    pub fn disconnect_user(&self, timeout: Option<u32>) -> Promise {
        let inner = self.inner.clone();
        promise(Box::pin(async move {
            inner.disconnect_user(timeout.unwrap_or(1_000)).await;
            Ok(JsValue::UNDEFINED)
        }))
    }

    #[wasm_bindgen(js_name = upsertUser)]
    pub fn upsert_user(&self, user: JsValue) -> Promise {
        self.run_call(upsert_call(&Array::of1(&user).into()))
    }

    #[wasm_bindgen(js_name = upsertUsers)]
    pub fn upsert_users(&self, users: JsValue) -> Promise {
        self.run_call(upsert_call(&users))
    }

    #[wasm_bindgen(js_name = partialUpdateUser)]
    pub fn partial_update_user(&self, update: JsValue) -> Promise {
        self.run_call(partial_update_call(&Array::of1(&update).into()))
    }

    #[wasm_bindgen(js_name = partialUpdateUsers)]
    pub fn partial_update_users(&self, updates: JsValue) -> Promise {
        self.run_call(partial_update_call(&updates))
    }

    /// `queryUsers(filter, sort, { presence, limit, offset })` → `{ users, duration }`.
    #[wasm_bindgen(js_name = queryUsers)]
    pub fn query_users(&self, filter: JsValue, sort: JsValue, options: JsValue) -> Promise {
        self.run_call(query_users_call(&filter, &sort, &options))
    }

    /// `queryChannels(filter, sort, { presence, watch, state, limit, offset })` → `Channel[]`.
    #[wasm_bindgen(js_name = queryChannels)]
    pub fn query_channels(&self, filter: JsValue, sort: JsValue, options: JsValue) -> Promise {
        self.run_call(query_channels_call(&filter, &sort, &options))
    }

    /// `channel(type, id, data)` or `channel(type, data)` (a distinct channel identified by its members).
    pub fn channel(
        &self,
        channel_type: JsValue,
        id: JsValue,
        data: JsValue,
    ) -> Result<Channel, JsValue> {
        let channel_type = channel_type
            .as_string()
            .filter(|t| valid_channel_part(t, false))
            .ok_or_else(|| {
                js::to_js_error(&js::invalid(
                    "channel() needs a channel type matching [\\w_-]+",
                ))
            })?;
        let (id, data) = match id.as_string() {
            Some(id) if valid_channel_part(&id, true) => (Some(id), data),
            Some(_) => {
                return Err(js::to_js_error(&js::invalid(
                    "channel() ids may contain only letters, digits, '!', '_' and '-'",
                )))
            }
            None if id.is_object() => (None, id),
            None => (None, data),
        };
        let data = if data.is_object() {
            data
        } else {
            Object::new().into()
        };
        Ok(Channel::from_inner(self.inner.channel_inner(
            channel_type,
            id,
            data,
        )))
    }

    /// `on(handler)` for every event, `on(type, handler)` for one type; returns `{ unsubscribe() }`.
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

fn without_trailing_slashes(mut url: String) -> String {
    while url.as_bytes().last() == Some(&b'/') {
        url.pop();
    }
    url
}

fn valid_channel_part(value: &str, allow_bang: bool) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (allow_bang && c == '!'))
}

/// `[{field, direction}]` from either that form or `{field: direction}` objects (one or a list).
fn normalize_sort(sort: &JsValue) -> Result<JsValue, ClientError> {
    let out = Array::new();
    if sort.is_undefined() || sort.is_null() {
        return Ok(out.into());
    }
    let items: Vec<JsValue> = if Array::is_array(sort) {
        Array::from(sort).iter().collect()
    } else if sort.is_object() {
        vec![sort.clone()]
    } else {
        return Err(js::invalid("sort must be an object or an array of objects"));
    };
    for item in items {
        let Some(obj) = item.dyn_ref::<Object>() else {
            return Err(js::invalid("sort must be an object or an array of objects"));
        };
        let field = js::get(&item, "field");
        if field.is_string() {
            let entry = Object::new();
            js::set(&entry, "field", &field);
            let direction = js::get(&item, "direction");
            let direction = if direction.is_undefined() {
                JsValue::from_f64(1.0)
            } else {
                direction
            };
            js::set(&entry, "direction", &direction);
            out.push(&entry);
            continue;
        }
        for pair in Object::entries(obj).iter() {
            let pair = Array::from(&pair);
            let entry = Object::new();
            js::set(&entry, "field", &pair.get(0));
            js::set(&entry, "direction", &pair.get(1));
            out.push(&entry);
        }
    }
    Ok(out.into())
}

/// `message` is the whole error message, e.g. "queryUsers() filter must be an object".
fn require_object(value: &JsValue, message: &'static str) -> Result<(), ClientError> {
    if value.is_object() && !Array::is_array(value) {
        Ok(())
    } else {
        Err(js::invalid(message))
    }
}

/// `/channels/{type}/{id}/query`, or `/channels/{type}/query` for a distinct channel.
fn channel_path(channel_type: &str, id: Option<&str>) -> String {
    let mut path = ["/channels/", &url_part(channel_type), "/"].concat();
    if let Some(id) = id {
        path.push_str(&url_part(id));
        path.push('/');
    }
    path.push_str("query");
    path
}

fn url_part(value: &str) -> String {
    String::from(js_sys::encode_uri_component(value))
}

impl ClientInner {
    fn rc(&self) -> Option<Rc<ClientInner>> {
        self.me.upgrade()
    }

    fn find_channel(&self, cid: &str) -> Option<Rc<ChannelInner>> {
        let channels = self.channels.borrow();
        channels
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, channel)| channel.clone())
    }

    fn users_object(&self) -> Object {
        self.users.borrow().clone()
    }

    // ---- connecting -------------------------------------------------------------------------------------

    /// Starts connecting; the Promise settles with the first frame of the connection (or its error, a JS `Error`
    /// with `code`). Nothing here waits, so the promise is handed back as it is.
    fn connect_user(&self, user: JsValue, token: JsValue) -> Result<Promise, ClientError> {
        let user_id = wire(&user)
            .and_then(|u| u.id().as_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                js::invalid("connectUser() needs a user object with a non-empty string id")
            })?;
        let source = if let Some(token) = token.as_string() {
            check_token_user(&token, &user_id)?;
            Token::Static(token)
        } else if let Some(provider) = token.dyn_ref::<Function>() {
            Token::Provider {
                provider: provider.clone(),
                current: None,
            }
        } else {
            return Err(js::invalid(
                "connectUser() needs a token string or a token provider function",
            ));
        };
        let is_provider = matches!(source, Token::Provider { .. });
        self.session
            .borrow_mut()
            .connect(js::now(), &user_id, is_provider)?;
        *self.token.borrow_mut() = source;
        let details = js::shallow_copy(&user);
        *self.user_details.borrow_mut() = details.clone().into();
        *self.user.borrow_mut() = js::shallow_copy(&user).into();

        let mut slots = None;
        let waiting = Promise::new(&mut |resolve, reject| slots = Some((resolve, reject)));
        if let Some((resolve, reject)) = slots {
            *self.pending_connect.borrow_mut() = Some(PendingConnect {
                promise: waiting.clone(),
                resolve,
                reject,
            });
        }
        self.install_page_events();
        self.pump(None);
        Ok(waiting)
    }

    async fn disconnect_user(self: Rc<Self>, timeout_ms: u32) {
        self.session.borrow_mut().disconnect(js::now());
        // Carry out the close (1000) and the rejection of a pending connect, but keep the closing socket to wait
        // for its close frame.
        let mut closing = None;
        loop {
            let effect = self.session.borrow_mut().poll_effect();
            match effect {
                None => break,
                Some(Effect::CloseSocket {
                    socket,
                    code,
                    reason,
                }) => closing = self.close_socket(socket, code, reason),
                Some(other) => self.run(other, None),
            }
        }
        self.page.borrow_mut().take();
        self.timer.borrow_mut().take();
        let old_socket = self.socket.borrow_mut().take();
        drop(old_socket);
        *self.token.borrow_mut() = Token::None;
        *self.user.borrow_mut() = JsValue::UNDEFINED;
        *self.user_details.borrow_mut() = JsValue::UNDEFINED;
        let fresh_users = Object::new();
        js::set(&self.state, "users", &fresh_users);
        *self.users.borrow_mut() = fresh_users;
        let channels = std::mem::take(&mut *self.channels.borrow_mut());
        drop(channels);
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

    fn install_page_events(&self) {
        let wake = self.me.clone();
        let offline = self.me.clone();
        let hide = self.me.clone();
        let events = PageEvents::install(
            move || {
                if let Some(inner) = wake.upgrade() {
                    inner.session.borrow_mut().handle_wake(js::now());
                    inner.pump(None);
                }
            },
            move || {
                if let Some(inner) = offline.upgrade() {
                    inner.session.borrow_mut().handle_offline(js::now());
                    inner.pump(None);
                }
            },
            move || {
                if let Some(inner) = hide.upgrade() {
                    inner.session.borrow_mut().handle_page_hide(js::now());
                    inner.pump(None);
                }
            },
        );
        let old = self.page.replace(events);
        drop(old);
    }

    /// Carries out every pending effect of the session, then re-arms the one timer. `frame` is the frame being
    /// handled, which a `ConnectResolved` resolves `connectUser` with.
    fn pump(&self, frame: Option<&JsValue>) {
        loop {
            let effect = self.session.borrow_mut().poll_effect();
            let Some(effect) = effect else {
                break;
            };
            self.run(effect, frame);
        }
        self.arm_timer();
    }

    fn arm_timer(&self) {
        let next = self.session.borrow().poll_timeout();
        let armed = self.timer.borrow().as_ref().map(|(at, _)| *at);
        if next == armed {
            return;
        }
        let replacement = next.map(|at| {
            let weak = self.me.clone();
            let delay = at.saturating_sub(js::now()).min(u64::from(u32::MAX / 2)) as u32;
            let timer = timeout(
                delay,
                Box::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        let fired = inner.timer.borrow_mut().take();
                        drop_later(Box::new(fired));
                        inner.session.borrow_mut().handle_timeout(js::now());
                        inner.pump(None);
                    }
                }),
            );
            (at, timer)
        });
        let old = self.timer.replace(replacement);
        drop(old);
    }

    fn run(&self, effect: Effect, frame: Option<&JsValue>) {
        match effect {
            Effect::OpenSocket {
                socket,
                reload_token,
            } => {
                if let Some(inner) = self.rc() {
                    spawn(Box::pin(async move {
                        inner.open_socket(socket, reload_token).await
                    }));
                }
            }
            Effect::CloseSocket {
                socket,
                code,
                reason,
            } => {
                self.close_socket(socket, code, reason);
            }
            Effect::Ping { socket } => {
                let frame = self.ping_frame();
                if let Some(current) = self.socket.borrow().as_ref().filter(|s| s.id == socket) {
                    current.send(&frame);
                }
            }
            Effect::ConnectionChanged { online } => {
                let event = local_event(event_type::CONNECTION_CHANGED);
                js::set(&event, "online", &JsValue::from_bool(online));
                self.emit_client(event_type::CONNECTION_CHANGED, &event.into());
            }
            Effect::ConnectResolved => {
                let pending = self.pending_connect.borrow_mut().take();
                if let Some(pending) = pending {
                    let value = frame.cloned().unwrap_or(JsValue::UNDEFINED);
                    let _ = pending.resolve.call1(&JsValue::UNDEFINED, &value);
                }
            }
            Effect::ConnectRejected(error) => {
                let pending = self.pending_connect.borrow_mut().take();
                *self.user.borrow_mut() = JsValue::UNDEFINED;
                *self.token.borrow_mut() = Token::None;
                let page = self.page.borrow_mut().take();
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
                for request in requests {
                    self.resubscribe(generation, request);
                }
            }
            Effect::PresenceChanged { user_id } => {
                let user = js::get(&self.users_object(), &user_id);
                let event = local_event(event_type::USER_PRESENCE_CHANGED);
                js::set(&event, "user", &user);
                js::set(&event, "created_at", &js_sys::Date::new_0().to_iso_string());
                js::set(&event, "received_at", &js_sys::Date::new_0());
                self.emit_client(event_type::USER_PRESENCE_CHANGED, &event.into());
            }
            Effect::ConnectionRecovered => {
                let event = local_event(event_type::CONNECTION_RECOVERED);
                self.emit_client(event_type::CONNECTION_RECOVERED, &event.into());
            }
        }
    }

    /// The keep-alive frame: `[{"type":"health.check","client_id":…}]`.
    fn ping_frame(&self) -> String {
        let ping = local_event(event_type::HEALTH_CHECK);
        let client_id = JsValue::from_str(self.session.borrow().client_id());
        js::set(&ping, "client_id", &client_id);
        js::to_json(&Array::of1(&ping))
    }

    fn emit_client(&self, event_type: &str, event: &JsValue) {
        emit(&self.listeners, event_type, event);
    }

    fn close_socket(
        &self,
        socket: SocketId,
        code: Option<u16>,
        reason: &str,
    ) -> Option<web_sys::WebSocket> {
        let current = {
            let mut slot = self.socket.borrow_mut();
            if slot.as_ref().is_some_and(|s| s.id == socket) {
                slot.take()
            } else {
                None
            }
        };
        let current = current?;
        let ws = current.close(code, reason);
        // The handler running right now may be one of this socket's: release them once it has returned.
        drop_later(Box::new(current));
        Some(ws)
    }

    async fn current_token(&self, reload: bool) -> Result<Option<String>, ClientError> {
        let provider = {
            let token = self.token.borrow();
            match &*token {
                Token::None => return Ok(None),
                Token::Static(token) => return Ok(Some(token.clone())),
                Token::Provider { provider, current } => match current {
                    Some(current) if !reload => return Ok(Some(current.clone())),
                    _ => provider.clone(),
                },
            }
        };
        let failed = |detail: String| {
            ClientError::new(
                client_code::TOKEN_PROVIDER,
                ["the token provider failed: ", &detail].concat(),
            )
        };
        let returned = provider
            .call0(&JsValue::UNDEFINED)
            .map_err(|e| failed(js::describe(&e)))?;
        let value = match returned.dyn_into::<Promise>() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .map_err(|e| failed(js::describe(&e)))?,
            Err(value) => value,
        };
        let token = value
            .as_string()
            .ok_or_else(|| failed("it did not return a string".to_string()))?;
        if let Token::Provider { current, .. } = &mut *self.token.borrow_mut() {
            *current = Some(token.clone());
        }
        Ok(Some(token))
    }

    async fn open_socket(self: Rc<Self>, socket: SocketId, reload_token: bool) {
        let token = self.current_token(reload_token).await;
        if !self.session.borrow().is_current(socket) {
            return;
        }
        let token = match token {
            Ok(token) => token.unwrap_or_default(),
            Err(error) => {
                js::log_error("presence-client: cannot connect", &js::to_js_error(&error));
                self.session
                    .borrow_mut()
                    .handle_socket_error(js::now(), socket);
                self.pump(None);
                return;
            }
        };
        let url = {
            let session = self.session.borrow();
            let payload = Object::new();
            js::set(
                &payload,
                "user_id",
                &JsValue::from_str(session.user_id().unwrap_or_default()),
            );
            js::set(&payload, "user_details", &self.user_details.borrow());
            payload
        };
        let request_id = self.session.borrow_mut().uuid();
        js::set(&url, "client_request_id", &JsValue::from_str(&request_id));
        let url = [
            &self.ws_url,
            "/connect?json=",
            &url_part(&js::to_json(&url)),
            "&api_key=",
            &url_part(&self.api_key),
            "&authorization=",
            &url_part(&token),
            "&stream-auth-type=jwt&X-Stream-Client=",
            &url_part(CLIENT_NAME),
        ]
        .concat();
        let (on_message, on_close, on_error) = (self.me.clone(), self.me.clone(), self.me.clone());
        let opened = Socket::open(
            socket,
            &url,
            move |event: web_sys::MessageEvent| {
                if let Some(inner) = on_message.upgrade() {
                    inner.handle_message(socket, &event.data());
                }
            },
            move |event: web_sys::CloseEvent| {
                if let Some(inner) = on_close.upgrade() {
                    inner.session.borrow_mut().handle_socket_closed(
                        js::now(),
                        socket,
                        event.code(),
                    );
                    inner.pump(None);
                }
            },
            move |_| {
                if let Some(inner) = on_error.upgrade() {
                    inner
                        .session
                        .borrow_mut()
                        .handle_socket_error(js::now(), socket);
                    inner.pump(None);
                }
            },
        );
        match opened {
            Ok(opened) => {
                let old = self.socket.replace(Some(opened));
                drop_later(Box::new(old));
            }
            Err(thrown) => {
                js::log_error("presence-client: cannot open the WebSocket", &thrown);
                self.session
                    .borrow_mut()
                    .handle_socket_error(js::now(), socket);
                self.pump(None);
            }
        }
    }

    // ---- the hot path: frame → store → listeners ------------------------------------------------------------

    fn handle_message(&self, socket: SocketId, data: &JsValue) {
        if !data.is_string() {
            return; // binary frames are not part of the protocol
        }
        let Ok(event) = js::json_parse(data) else {
            return;
        };
        let Some(wire_event) = wire(&event) else {
            return;
        };
        let Some(kind) = wire_event.kind().as_string() else {
            return;
        };
        let carries_user =
            kind == event_type::USER_PRESENCE_CHANGED || kind == event_type::USER_UPDATED;
        let user = if carries_user {
            wire_event.user()
        } else {
            JsValue::UNDEFINED
        };
        let me = wire_event.me();
        let connection_id = wire_event.connection_id().as_string();
        let error = wire_event.error();
        let frame = Frame {
            kind: &kind,
            connection_id: connection_id.as_deref(),
            error: error.is_object().then(|| js::rejection_of(&error, 0)),
            user: js::presence_of(&user),
            me: js::presence_of(&me),
        };
        let verdict = self
            .session
            .borrow_mut()
            .handle_frame(js::now(), socket, &frame);
        let (user_presence, me_presence) = (frame.user, frame.me);
        // connection.changed and the connectUser resolution come before the frame's own dispatch.
        self.pump(Some(&event));
        if verdict != FrameVerdict::Dispatch {
            return;
        }
        if let Some(presence) = &user_presence {
            self.apply_user_event(&presence.id, &user);
        }
        if let Some(presence) = &me_presence {
            self.apply_me(&presence.id, &me);
        }
        if kind == event_type::USER_WATCHING_START || kind == event_type::USER_WATCHING_STOP {
            self.apply_watching(wire_event, kind == event_type::USER_WATCHING_START);
        }
        wire_event.set_received_at(&js_sys::Date::new_0());
        self.emit_client(&kind, &event);
        if let Some(cid) = wire_event.cid().as_string() {
            let channel = self.find_channel(&cid);
            if let Some(channel) = channel {
                emit(&channel.listeners, &kind, &event);
            }
        }
    }

    /// `user.presence.changed` / `user.updated`: the event's user replaces the cached one everywhere.
    fn apply_user_event(&self, id: &str, user: &JsValue) {
        let users = self.users_object();
        js::set(&users, id, user);
        let channels: Vec<Rc<ChannelInner>> = {
            let channels = self.channels.borrow();
            if channels.is_empty() {
                Vec::new()
            } else {
                channels.iter().map(|(_, c)| c.clone()).collect()
            }
        };
        for channel in channels {
            channel.replace_user(id, user);
        }
        let is_me = self.session.borrow().user_id() == Some(id);
        if is_me {
            let merged = js::shallow_copy(&self.user.borrow());
            if let Some(user) = user.dyn_ref::<Object>() {
                Object::assign(&merged, user);
            }
            *self.user.borrow_mut() = merged.into();
            // Keep what is re-sent on reconnect in step with the server (e.g. `invisible` changed by an upsert).
            let details = self.user_details.borrow().clone();
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
    }

    fn apply_me(&self, id: &str, me: &JsValue) {
        *self.user.borrow_mut() = me.clone();
        js::set(&self.users_object(), id, me);
    }

    fn apply_watching(&self, event: &js::Wire, start: bool) {
        let Some(cid) = event.cid().as_string() else {
            return;
        };
        let channel = self.find_channel(&cid);
        if let Some(channel) = channel {
            channel.apply_watching(&event.user(), &js::get(event, "watcher_count"), start);
        }
    }

    // ---- REST -----------------------------------------------------------------------------------------------

    /// Runs a prepared REST call as a Promise (a preparation error rejects at once, with no network call).
    pub(crate) fn run_call(&self, call: Result<RestCall, ClientError>) -> Promise {
        match (call, self.rc()) {
            (Ok(call), Some(inner)) => promise(Box::pin(inner.call(call))),
            (Err(error), _) => Promise::reject(&js::to_js_error(&error)),
            (Ok(_), None) => Promise::reject(&js::to_js_error(&ClientError::not_connected("call"))),
        }
    }

    /// Waits for a pending `connectUser`; fails at once without a user.
    async fn ready(&self, call: &str) -> Result<(), ClientError> {
        let pending = self
            .pending_connect
            .borrow()
            .as_ref()
            .map(|p| p.promise.clone());
        if let Some(pending) = pending {
            JsFuture::from(pending).await.map_err(|e| {
                ClientError::new(
                    client_code::NOT_CONNECTED,
                    [call, "() failed: ", &js::describe(&e)].concat(),
                )
            })?;
        }
        if self.session.borrow().user_id().is_none() {
            return Err(ClientError::not_connected(call));
        }
        Ok(())
    }

    /// Every REST call of the client: wait for the connection, send, then fold the answer into the state.
    async fn call(self: Rc<Self>, call: RestCall) -> Result<JsValue, ClientError> {
        self.ready(call.api).await?;
        let mut watch = false;
        let body = call.body.map(|body| {
            if call.default_watch && js::get(&body, "watch").is_undefined() {
                let connected = self.session.borrow().connection_id().is_some();
                js::set(&body, "watch", &JsValue::from_bool(connected));
            }
            watch = js::get(&body, "watch").as_bool() == Some(true);
            js::to_json(&body)
        });
        let query: Vec<(&str, &str)> = call
            .payload
            .as_deref()
            .map(|p| ("payload", p))
            .into_iter()
            .collect();
        let answer = self
            .request(call.name, call.method, &call.path, &query, body.as_deref())
            .await?;
        Ok(self.fold_answer(call.after, watch, call.payload, answer))
    }

    fn fold_answer(
        &self,
        after: After,
        watch: bool,
        payload: Option<String>,
        answer: JsValue,
    ) -> JsValue {
        match after {
            After::Nothing => answer,
            After::Users { presence } => {
                let users = js::get(&answer, "users");
                let presences = self.store_users(&users);
                let mut session = self.session.borrow_mut();
                session.observe_users(presences);
                if let (true, Some(payload)) = (presence, payload) {
                    session.add_user_query(payload);
                }
                answer
            }
            After::Channels { presence } => {
                let list = js::get(&answer, "channels");
                let result = Array::new();
                if Array::is_array(&list) {
                    for state in Array::from(&list).iter() {
                        let channel = js::get(&state, "channel");
                        let channel_type = js::get(&channel, "type").as_string();
                        let id = js::get(&channel, "id").as_string();
                        let (Some(channel_type), Some(id)) = (channel_type, id) else {
                            continue;
                        };
                        let inner =
                            self.channel_inner(channel_type, Some(id), Object::new().into());
                        self.fold_channel(&inner, &state, watch, presence);
                        result.push(&Channel::from_inner(inner).into());
                    }
                }
                result.into()
            }
            After::Channel { channel, presence } => {
                self.fold_channel(&channel, &answer, watch, presence);
                answer
            }
            After::Recovery { generation } => {
                let presences = match self.recovered_channel(&answer) {
                    Some(channel) => channel.apply_state(&answer, self),
                    None => {
                        let users = js::get(&answer, "users");
                        self.store_users(&users)
                    }
                };
                self.session
                    .borrow_mut()
                    .handle_recovery_answer(generation, presences);
                self.pump(None);
                answer
            }
        }
    }

    fn fold_channel(
        &self,
        channel: &Rc<ChannelInner>,
        state: &JsValue,
        watch: bool,
        presence: bool,
    ) {
        let presences = channel.apply_state(state, self);
        self.register_channel(channel);
        let mut session = self.session.borrow_mut();
        session.observe_users(presences);
        if let (true, Some(id)) = (watch, channel.id()) {
            session.watch_channel(&channel.channel_type, &id, presence);
        }
    }

    fn recovered_channel(&self, answer: &JsValue) -> Option<Rc<ChannelInner>> {
        let channel = js::get(answer, "channel");
        let cid = js::get(&channel, "cid").as_string()?;
        self.find_channel(&cid)
    }

    /// One REST call with the common decoration; an expired token from a provider is reloaded and the call
    /// repeated, as the reference SDK does.
    async fn request(
        &self,
        name: &str,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<JsValue, ClientError> {
        let mut reload = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let token = self.current_token(reload).await?;
            let mut url = [&self.base_url, path, "?"].concat();
            {
                let session = self.session.borrow();
                if let Some(user_id) = session.user_id() {
                    url.push_str("user_id=");
                    url.push_str(&url_part(user_id));
                    url.push('&');
                }
                if let Some(connection_id) = session.connection_id() {
                    url.push_str("connection_id=");
                    url.push_str(&url_part(connection_id));
                    url.push('&');
                }
            }
            url.push_str("api_key=");
            url.push_str(&url_part(&self.api_key));
            for (key, value) in query {
                url.push('&');
                url.push_str(key);
                url.push('=');
                url.push_str(&url_part(value));
            }
            let result = http::fetch_json(Call {
                name,
                method,
                url: &url,
                token: token.as_deref(),
                body,
                timeout_ms: self.timeout_ms,
            })
            .await;
            let provider = matches!(&*self.token.borrow(), Token::Provider { .. });
            match result {
                Err(error)
                    if error.code == error_code::TOKEN_EXPIRED && provider && attempts < 3 =>
                {
                    reload = true
                }
                other => return other,
            }
        }
    }

    /// Puts the users of an answer's list into `state.users`; returns their presence for the session.
    pub(crate) fn store_users(&self, users: &JsValue) -> Vec<UserPresence> {
        let mut presences = Vec::new();
        if !Array::is_array(users) {
            return presences;
        }
        let target = self.users_object();
        for user in Array::from(users).iter() {
            if let Some(presence) = js::presence_of(&user) {
                js::set(&target, &presence.id, &user);
                presences.push(presence);
            }
        }
        presences
    }

    /// The channel object for a cid, shared by every `channel()` call naming it.
    pub(crate) fn channel_inner(
        &self,
        channel_type: String,
        id: Option<String>,
        data: JsValue,
    ) -> Rc<ChannelInner> {
        if let Some(id) = &id {
            let cid = [&channel_type, ":", id].concat();
            if let Some(existing) = self.find_channel(&cid) {
                return existing;
            }
        }
        let inner = Rc::new(ChannelInner::new(self.me.clone(), channel_type, id, data));
        self.register_channel(&inner);
        inner
    }

    fn register_channel(&self, channel: &Rc<ChannelInner>) {
        if let Some(cid) = channel.cid() {
            if self.find_channel(&cid).is_none() {
                self.channels.borrow_mut().push((cid, channel.clone()));
            }
        }
    }

    /// Stops recording the channel for recovery and tells the server.
    pub(crate) fn stop_watching_call(
        &self,
        channel: &Rc<ChannelInner>,
    ) -> Result<RestCall, ClientError> {
        let id = channel.id().ok_or_else(|| {
            js::invalid("stopWatching() needs a channel with an id: call watch() first")
        })?;
        self.session
            .borrow_mut()
            .stop_watching(&channel.channel_type, &id);
        Ok(RestCall {
            api: "stopWatching",
            name: "StopWatching",
            method: "POST",
            path: [
                "/channels/",
                &url_part(&channel.channel_type),
                "/",
                &url_part(&id),
                "/stop-watching",
            ]
            .concat(),
            payload: None,
            body: Some(Object::new()),
            default_watch: false,
            after: After::Nothing,
        })
    }

    /// Makes one subscription again on the new connection and reports its answer to the session.
    fn resubscribe(&self, generation: u64, request: Subscription) {
        let Some(inner) = self.rc() else {
            return;
        };
        let call = match request {
            Subscription::UserQuery { payload } => RestCall {
                api: "queryUsers",
                name: "QueryUsers",
                method: "GET",
                path: "/users".to_string(),
                payload: Some(payload),
                body: None,
                default_watch: false,
                after: After::Recovery { generation },
            },
            Subscription::Channel {
                channel_type,
                id,
                presence,
            } => {
                let body = Object::new();
                js::set(&body, "state", &JsValue::TRUE);
                js::set(&body, "watch", &JsValue::TRUE);
                js::set(&body, "presence", &JsValue::from_bool(presence));
                RestCall {
                    api: "watch",
                    name: "GetOrCreateChannel",
                    method: "POST",
                    path: channel_path(&channel_type, Some(&id)),
                    payload: None,
                    body: Some(body),
                    default_watch: false,
                    after: After::Recovery { generation },
                }
            }
        };
        spawn(Box::pin(async move {
            if inner.clone().call(call).await.is_err() {
                inner
                    .session
                    .borrow_mut()
                    .handle_recovery_answer(generation, Vec::new());
                inner.pump(None);
            }
        }));
    }
}

/// What to do with an answer.
pub(crate) enum After {
    Nothing,
    /// Store the users; record the query for recovery when it asked for presence.
    Users {
        presence: bool,
    },
    /// Build the channels of a `queryChannels` answer.
    Channels {
        presence: bool,
    },
    Channel {
        channel: Rc<ChannelInner>,
        presence: bool,
    },
    /// An answer to a request of `Effect::Resubscribe`.
    Recovery {
        generation: u64,
    },
}

/// A REST call, prepared (arguments checked) before anything is awaited.
pub(crate) struct RestCall {
    /// The JS method name, for messages.
    api: &'static str,
    /// The operation name, for error messages.
    name: &'static str,
    method: &'static str,
    path: String,
    /// The `payload` query parameter (`GET /users`).
    payload: Option<String>,
    body: Option<Object>,
    /// Whether `watch` defaults to "connected" when the caller did not set it.
    default_watch: bool,
    after: After,
}

fn upsert_call(users: &JsValue) -> Result<RestCall, ClientError> {
    if !Array::is_array(users) {
        return Err(js::invalid("upsertUsers() needs an array of users"));
    }
    let by_id = Object::new();
    for user in Array::from(users).iter() {
        let id = wire(&user)
            .and_then(|u| u.id().as_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                js::invalid("upsertUser() needs user objects with a non-empty string id")
            })?;
        js::set(&by_id, &id, &user);
    }
    let body = Object::new();
    js::set(&body, "users", &by_id);
    Ok(RestCall {
        api: "upsertUsers",
        name: "UpdateUsers",
        method: "POST",
        path: "/users".to_string(),
        payload: None,
        body: Some(body),
        default_watch: false,
        after: After::Nothing,
    })
}

fn partial_update_call(updates: &JsValue) -> Result<RestCall, ClientError> {
    if !Array::is_array(updates) {
        return Err(js::invalid(
            "partialUpdateUsers() needs an array of updates",
        ));
    }
    for update in Array::from(updates).iter() {
        if wire(&update)
            .and_then(|u| u.id().as_string())
            .filter(|id| !id.is_empty())
            .is_none()
        {
            return Err(js::invalid(
                "partialUpdateUser() needs an object with a non-empty string id",
            ));
        }
    }
    let body = Object::new();
    js::set(&body, "users", updates);
    Ok(RestCall {
        api: "partialUpdateUser",
        name: "UpdateUsersPartial",
        method: "PATCH",
        path: "/users".to_string(),
        payload: None,
        body: Some(body),
        default_watch: false,
        after: After::Nothing,
    })
}

/// `{filter_conditions, sort, ...defaults, ...options}`.
fn query_body(
    filter: &JsValue,
    sort: &JsValue,
    options: &JsValue,
    messages: [&'static str; 2],
    defaults: &[(&str, bool)],
) -> Result<Object, ClientError> {
    require_object(filter, messages[0])?;
    let sort = normalize_sort(sort)?;
    if !(options.is_undefined() || options.is_null()) {
        require_object(options, messages[1])?;
    }
    let body = Object::new();
    js::set(&body, "filter_conditions", filter);
    js::set(&body, "sort", &sort);
    for (key, value) in defaults {
        js::set(&body, key, &JsValue::from_bool(*value));
    }
    if let Some(options) = options.dyn_ref::<Object>() {
        Object::assign(&body, options);
    }
    Ok(body)
}

fn query_users_call(
    filter: &JsValue,
    sort: &JsValue,
    options: &JsValue,
) -> Result<RestCall, ClientError> {
    let payload = query_body(
        filter,
        sort,
        options,
        [
            "queryUsers() filter must be an object",
            "queryUsers() options must be an object",
        ],
        &[("presence", false)],
    )?;
    let presence = js::get(&payload, "presence").as_bool() == Some(true);
    Ok(RestCall {
        api: "queryUsers",
        name: "QueryUsers",
        method: "GET",
        path: "/users".to_string(),
        payload: Some(js::to_json(&payload)),
        body: None,
        default_watch: false,
        after: After::Users { presence },
    })
}

fn query_channels_call(
    filter: &JsValue,
    sort: &JsValue,
    options: &JsValue,
) -> Result<RestCall, ClientError> {
    let body = query_body(
        filter,
        sort,
        options,
        [
            "queryChannels() filter must be an object",
            "queryChannels() options must be an object",
        ],
        &[("state", true), ("presence", false)],
    )?;
    let presence = js::get(&body, "presence").as_bool() == Some(true);
    Ok(RestCall {
        api: "queryChannels",
        name: "QueryChannels",
        method: "POST",
        path: "/channels".to_string(),
        payload: None,
        body: Some(body),
        default_watch: true,
        after: After::Channels { presence },
    })
}

/// `watch(options)` / `query(options)`: `POST /channels/{type}/{id}/query` (or `/channels/{type}/query` for a
/// distinct channel).
pub(crate) fn channel_query_call(
    channel: &Rc<ChannelInner>,
    options: &JsValue,
) -> Result<RestCall, ClientError> {
    if !(options.is_undefined() || options.is_null()) {
        require_object(options, "watch() options must be an object")?;
    }
    let body = Object::new();
    js::set(&body, "data", &channel.custom);
    js::set(&body, "state", &JsValue::TRUE);
    js::set(&body, "presence", &JsValue::FALSE);
    if let Some(options) = options.dyn_ref::<Object>() {
        Object::assign(&body, options);
    }
    let presence = js::get(&body, "presence").as_bool() == Some(true);
    let path = channel_path(&channel.channel_type, channel.id().as_deref());
    Ok(RestCall {
        api: "watch",
        name: "GetOrCreateChannel",
        method: "POST",
        path,
        payload: None,
        body: Some(body),
        default_watch: true,
        after: After::Channel {
            channel: channel.clone(),
            presence,
        },
    })
}

/// A static token must name the connecting user, as the reference SDK checks before any network call.
fn check_token_user(token: &str, user_id: &str) -> Result<(), ClientError> {
    // The middle one of the three dot-separated parts. A byte search and `get` (which cannot panic) keep the str
    // pattern and slice-panic machinery out of the bundle.
    let after_dot = |s: &str| s.bytes().position(|b| b == b'.');
    let payload = after_dot(token)
        .and_then(|first| token.get(first + 1..))
        .and_then(|rest| after_dot(rest).and_then(|second| rest.get(..second)))
        .unwrap_or("");
    // base64url without padding → standard base64 with padding, for atob.
    let mut standard = String::with_capacity(payload.len() + 3);
    for c in payload.chars() {
        standard.push(match c {
            '-' => '+',
            '_' => '/',
            c => c,
        });
    }
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    let claims = js::atob(&standard)
        .ok()
        .and_then(|decoded| js::json_parse(&JsValue::from_str(&decoded)).ok())
        .ok_or_else(|| js::invalid("the token is not a JWT"))?;
    match js::get(&claims, "user_id").as_string() {
        Some(id) if id == user_id => Ok(()),
        _ => Err(js::invalid(
            "the token's user_id does not match the user's id",
        )),
    }
}
