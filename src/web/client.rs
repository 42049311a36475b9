//! `Client`: the exported entry point, mirroring the presence subset of `stream-chat`'s `StreamChat`. A thin
//! surface: options are read here, everything else is handed to the driver, the REST pipeline and the registry.

use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise};
use wasm_bindgen::prelude::*;

use crate::core::{Config, Endpoints};
use crate::web::channel::Channel;
use crate::web::driver;
use crate::web::fold::run_call;
use crate::web::js;
use crate::web::requests;
use crate::web::runtime::{promise, MAX_TIMER_MS};
use crate::web::state::ClientState;

pub use crate::web::events::EventSubscription;

const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// The longest batching window servers grant.
const MAX_BATCH_MS: u64 = 50;
/// The header segment of every HS256 JWT, and so of dev tokens.
const DEV_TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The presence client: `new Client(apiKey, { baseURL })`.
#[wasm_bindgen]
pub struct Client {
    state: Rc<ClientState>,
}

fn option_u64(options: &JsValue, key: &str) -> Option<u64> {
    js::get(options, key)
        .as_f64()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
}

/// A string option: absent (`undefined` or `null`) or a string; anything else is refused naming the option.
fn option_string(options: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let value = js::get(options, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.as_string().map(Some).ok_or_else(|| {
        js::to_js_error(&js::invalid(
            ["new Client(): ", key, " must be a string"].concat(),
        ))
    })
}

#[wasm_bindgen]
impl Client {
    /// `new Client(apiKey, { baseURL, wsBaseURL, timeout, connectTimeout, lastActiveRefreshInterval,
    /// shareConnection, batchMs })`.
    #[wasm_bindgen(constructor)]
    pub fn new(api_key: JsValue, options: JsValue) -> Result<Client, JsValue> {
        let api_key = api_key
            .as_string()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| js::to_js_error(&js::invalid("new Client() needs an API key string")))?;
        let endpoints = Endpoints::new(
            api_key,
            option_string(&options, "baseURL")?,
            option_string(&options, "wsBaseURL")?,
        )
        .map_err(|e| js::to_js_error(&e))?;
        let mut config = Config::default();
        if let Some(refresh) = option_u64(&options, "lastActiveRefreshInterval").filter(|v| *v > 0)
        {
            config.last_active_refresh = refresh;
        }
        if let Some(budget) = option_u64(&options, "connectTimeout").filter(|v| *v > 0) {
            config.connect_budget = budget;
        }
        if let Some(batch) = option_u64(&options, "batchMs") {
            if batch > MAX_BATCH_MS {
                return Err(js::to_js_error(&js::invalid(
                    "new Client(): batchMs must be from 0 (one event per frame) to 50",
                )));
            }
            config.batch_ms = batch as u32;
        }
        // Only `false` opts out: tabs share by default.
        config.share_connection = js::get(&options, "shareConnection").as_bool() != Some(false);
        // Clamped to what `setTimeout` holds: a longer delay would fire at once and abort every request.
        let timeout_ms = option_u64(&options, "timeout")
            .filter(|v| *v > 0)
            .map_or(DEFAULT_TIMEOUT_MS, |v| {
                v.min(u64::from(MAX_TIMER_MS)) as u32
            });
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64 ^ js::now();
        Ok(Client {
            state: ClientState::new(endpoints, timeout_ms, config, seed),
        })
    }

    /// The connected user (own fields included), kept current by events; `undefined` when disconnected.
    #[wasm_bindgen(getter)]
    pub fn user(&self) -> JsValue {
        self.state.cache.user()
    }

    #[wasm_bindgen(getter, js_name = userID)]
    pub fn user_id(&self) -> JsValue {
        js::string_or_undefined(self.state.session.borrow().user_id())
    }

    /// `{ users }`: every user the client has seen, by id, replaced by each event about them.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> JsValue {
        self.state.cache.state()
    }

    /// The id the server gave the open connection.
    #[wasm_bindgen(getter, js_name = connectionId)]
    pub fn connection_id(&self) -> JsValue {
        js::string_or_undefined(self.state.session.borrow().connection_id())
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
        driver::connect(&self.state, user, token)
            .unwrap_or_else(|error| Promise::reject(&js::to_js_error(&error)))
    }

    /// Closes the connection with 1000 (peers see the user offline at once) and forgets the user.
    #[wasm_bindgen(js_name = disconnectUser)]
    pub fn disconnect_user(&self, timeout: Option<u32>) -> Promise {
        let state = self.state.clone();
        promise(Box::pin(async move {
            driver::disconnect(state, timeout.unwrap_or(1_000)).await;
            Ok(JsValue::UNDEFINED)
        }))
    }

    #[wasm_bindgen(js_name = upsertUser)]
    pub fn upsert_user(&self, user: JsValue) -> Promise {
        run_call(&self.state, requests::upsert(&Array::of1(&user).into()))
    }

    #[wasm_bindgen(js_name = upsertUsers)]
    pub fn upsert_users(&self, users: JsValue) -> Promise {
        run_call(&self.state, requests::upsert(&users))
    }

    #[wasm_bindgen(js_name = partialUpdateUser)]
    pub fn partial_update_user(&self, update: JsValue) -> Promise {
        run_call(
            &self.state,
            requests::partial_update(&Array::of1(&update).into()),
        )
    }

    #[wasm_bindgen(js_name = partialUpdateUsers)]
    pub fn partial_update_users(&self, updates: JsValue) -> Promise {
        run_call(&self.state, requests::partial_update(&updates))
    }

    /// `queryUsers(filter, sort, { presence, limit, offset })` → `{ users, duration }`.
    #[wasm_bindgen(js_name = queryUsers)]
    pub fn query_users(&self, filter: JsValue, sort: JsValue, options: JsValue) -> Promise {
        run_call(&self.state, requests::query_users(&filter, &sort, &options))
    }

    /// `queryChannels(filter, sort, { presence, watch, state, limit, offset })` → `Channel[]`.
    #[wasm_bindgen(js_name = queryChannels)]
    pub fn query_channels(&self, filter: JsValue, sort: JsValue, options: JsValue) -> Promise {
        run_call(
            &self.state,
            requests::query_channels(&filter, &sort, &options, Channel::handle),
        )
    }

    /// `channel(type, id, data)` or `channel(type, data)` (a distinct channel identified by its members).
    pub fn channel(
        &self,
        channel_type: JsValue,
        id: JsValue,
        data: JsValue,
    ) -> Result<Channel, JsValue> {
        let (channel_type, id, data) = requests::channel_arguments(&channel_type, id, data)
            .map_err(|error| js::to_js_error(&error))?;
        let channel = self.state.channels.get_or_create(channel_type, id, data);
        Ok(Channel::new(channel, &self.state))
    }

    /// `on(handler)` for every event, `on(type, handler)` for one type; returns `{ unsubscribe() }`.
    pub fn on(
        &self,
        type_or_handler: JsValue,
        handler: Option<Function>,
    ) -> Result<EventSubscription, JsValue> {
        self.state.listeners.on(type_or_handler, handler)
    }

    pub fn off(&self, type_or_handler: JsValue, handler: Option<Function>) {
        self.state.listeners.off(type_or_handler, handler);
    }

    /// `onStateChange(listener)`: `listener()` runs after anything `state.users`, `user`, `userID` or
    /// `connectionId` shows may have changed (possibly several times in one task, possibly when nothing did);
    /// returns `{ unsubscribe() }`. What `createPresenceStore` builds its snapshots on.
    #[wasm_bindgen(js_name = onStateChange)]
    pub fn on_state_change(&self, listener: JsValue) -> Result<EventSubscription, JsValue> {
        self.state.changes.on(listener, None)
    }
}
