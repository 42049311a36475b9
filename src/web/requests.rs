//! Request building and argument checks: every app call is checked and turned into a [`RestCall`] before
//! anything is awaited, so a bad argument rejects at once with no network call. Also the checks of
//! `connectUser` and `client.channel()` arguments.

use std::rc::Rc;

use js_sys::{Array, Function, Object};
use presence_protocol::ids;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::urls::{channel_query_path, stop_watching_path};
use crate::core::{ClientError, Subscription};
use crate::web::credentials::Token;
use crate::web::js::{self, user_id_of};
use crate::web::registry::ChannelState;
use crate::web::state::ClientState;

/// Makes the JS `Channel` handle of a channel of an answer (the exported surface, which this layer cannot name).
pub type ChannelHandle = fn(Rc<ChannelState>, &Rc<ClientState>) -> JsValue;

/// What to do with an answer.
pub enum After {
    Nothing,
    /// A user write: the connected user's entry of the answer updates `client.user`.
    Written,
    /// Store the users; record the query for recovery when it asked for presence.
    Users {
        presence: bool,
    },
    /// Build the channels of a `queryChannels` answer.
    Channels {
        presence: bool,
        handle: ChannelHandle,
    },
    /// Fold the answer into the channel; record the watch for recovery.
    Channel {
        channel: Rc<ChannelState>,
        presence: bool,
    },
    /// A recovery request: the driver reconciles the session from the answer.
    Recovered,
}

/// A REST call, prepared (arguments checked) before anything is awaited.
#[must_use = "a prepared call does nothing until it is run"]
pub struct RestCall {
    /// The JS method name, for messages.
    pub api: &'static str,
    /// The operation name, for error messages.
    pub name: &'static str,
    pub method: &'static str,
    pub path: String,
    /// The `payload` query parameter (`GET /users`).
    pub payload: Option<String>,
    pub body: Option<Object>,
    /// Whether `watch` defaults to "connected" when the caller did not set it.
    pub default_watch: bool,
    pub after: After,
}

impl RestCall {
    fn post(
        api: &'static str,
        name: &'static str,
        path: String,
        body: Object,
        after: After,
    ) -> Self {
        RestCall {
            api,
            name,
            method: "POST",
            path,
            payload: None,
            body: Some(body),
            default_watch: false,
            after,
        }
    }
}

/// `connectUser(user, token)`: the user's id and the token source.
pub fn connect_arguments(user: &JsValue, token: &JsValue) -> Result<(String, Token), ClientError> {
    let user_id = user_id_of(user).ok_or_else(|| {
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
    Ok((user_id, source))
}

/// `channel(type, id, data)` or `channel(type, data)`: the type, the id if any, and the data object.
pub fn channel_arguments(
    channel_type: &JsValue,
    id: JsValue,
    data: JsValue,
) -> Result<(String, Option<String>, JsValue), ClientError> {
    let channel_type = channel_type
        .as_string()
        .filter(|t| ids::is_channel_type(t))
        .ok_or_else(|| js::invalid("channel() needs a channel type matching [\\w_-]+"))?;
    let (id, data) = match id.as_string() {
        Some(id) if ids::is_channel_id(&id) => (Some(id), data),
        Some(_) => {
            return Err(js::invalid(
                "channel() ids are 1 to 64 letters, digits, '!', '_' and '-'",
            ))
        }
        None if id.is_object() => (None, id),
        None => (None, data),
    };
    let data = if data.is_object() {
        data
    } else {
        Object::new().into()
    };
    Ok((channel_type, id, data))
}

pub fn upsert(users: &JsValue) -> Result<RestCall, ClientError> {
    if !Array::is_array(users) {
        return Err(js::invalid("upsertUsers() needs an array of users"));
    }
    let by_id = Object::new();
    for user in Array::from(users).iter() {
        let id = user_id_of(&user).ok_or_else(|| {
            js::invalid("upsertUser() needs user objects with a non-empty string id")
        })?;
        js::set(&by_id, &id, &user);
    }
    let body = Object::new();
    js::set(&body, "users", &by_id);
    Ok(RestCall::post(
        "upsertUsers",
        "UpdateUsers",
        "/users".to_string(),
        body,
        After::Written,
    ))
}

pub fn partial_update(updates: &JsValue) -> Result<RestCall, ClientError> {
    if !Array::is_array(updates) {
        return Err(js::invalid(
            "partialUpdateUsers() needs an array of updates",
        ));
    }
    for update in Array::from(updates).iter() {
        if user_id_of(&update).is_none() {
            return Err(js::invalid(
                "partialUpdateUser() needs an object with a non-empty string id",
            ));
        }
    }
    let body = Object::new();
    js::set(&body, "users", updates);
    Ok(RestCall {
        method: "PATCH",
        ..RestCall::post(
            "partialUpdateUser",
            "UpdateUsersPartial",
            "/users".to_string(),
            body,
            After::Written,
        )
    })
}

pub fn query_users(
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
    Ok(user_query(js::to_json(&payload), After::Users { presence }))
}

fn user_query(payload: String, after: After) -> RestCall {
    RestCall {
        api: "queryUsers",
        name: "QueryUsers",
        method: "GET",
        path: "/users".to_string(),
        payload: Some(payload),
        body: None,
        default_watch: false,
        after,
    }
}

pub fn query_channels(
    filter: &JsValue,
    sort: &JsValue,
    options: &JsValue,
    handle: ChannelHandle,
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
        default_watch: true,
        ..RestCall::post(
            "queryChannels",
            "QueryChannels",
            "/channels".to_string(),
            body,
            After::Channels { presence, handle },
        )
    })
}

/// `watch(options)` / `query(options)`: `POST /channels/{type}/{id}/query` (or `/channels/{type}/query` for a
/// distinct channel).
pub fn channel_query(
    channel: &Rc<ChannelState>,
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
    let path = channel_query_path(&channel.channel_type, channel.id().as_deref());
    Ok(RestCall {
        default_watch: true,
        ..RestCall::post(
            "watch",
            "GetOrCreateChannel",
            path,
            body,
            After::Channel {
                channel: channel.clone(),
                presence,
            },
        )
    })
}

/// `stopWatching()`: the channel's id, and the call.
pub fn stop_watching(channel: &ChannelState) -> Result<(String, RestCall), ClientError> {
    let id = channel.id().ok_or_else(|| {
        js::invalid("stopWatching() needs a channel with an id: call watch() first")
    })?;
    let path = stop_watching_path(&channel.channel_type, &id);
    let call = RestCall::post(
        "stopWatching",
        "StopWatching",
        path,
        Object::new(),
        After::Nothing,
    );
    Ok((id, call))
}

/// One recovery request on a new connection (a chunk of followed users or of watched channels); its answer goes
/// back to the session.
pub fn resubscribe(request: Subscription) -> RestCall {
    // `{"filter_conditions":{field:{"$in":[…]}},"presence":…,"limit":n}`: one page holds every name.
    let body = |field: &str, names: Vec<String>, presence: bool| {
        let limit = JsValue::from_f64(names.len() as f64);
        let list: Array = names.into_iter().map(JsValue::from).collect();
        let condition = Object::new();
        js::set(&condition, "$in", &list);
        let filter = Object::new();
        js::set(&filter, field, &condition);
        let body = Object::new();
        js::set(&body, "filter_conditions", &filter);
        js::set(&body, "presence", &JsValue::from_bool(presence));
        js::set(&body, "limit", &limit);
        body
    };
    match request {
        Subscription::Users { ids } => {
            user_query(js::to_json(&body("id", ids, true)), After::Recovered)
        }
        Subscription::Channels { cids, presence } => {
            let body = body("cid", cids, presence);
            js::set(&body, "state", &JsValue::TRUE);
            js::set(&body, "watch", &JsValue::TRUE);
            RestCall::post(
                "queryChannels",
                "QueryChannels",
                "/channels".to_string(),
                body,
                After::Recovered,
            )
        }
    }
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
