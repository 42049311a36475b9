//! JS bindings the client needs beyond js-sys/web-sys: direct property access on wire objects (cheaper than
//! `Reflect`), JSON on JS strings without copying them into Rust, base64, the global `fetch`; plus the
//! conversions between JS values and the core's types.

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::{client_code, decimal, ClientError, PresenceState, Rejection, UserPresence};

#[wasm_bindgen]
extern "C" {
    /// Any object that came from the wire or from the app: the fields of the frame path are read through plain
    /// property access (one import each); the rest through `get`.
    pub type Wire;

    #[wasm_bindgen(method, getter, js_name = type)]
    pub fn kind(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn user(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn me(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn id(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn online(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn status(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn last_active(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn connection_id(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn cid(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn error(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, setter)]
    pub fn set_received_at(this: &Wire, value: &JsValue);

    /// `JSON.parse` on a JS string, which stays on the JS side.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    pub fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_name = atob, catch)]
    pub fn atob(data: &str) -> Result<String, JsValue>;
    #[wasm_bindgen(js_name = btoa, catch)]
    pub fn btoa(data: &str) -> Result<String, JsValue>;

    /// The global `fetch` (windows and workers alike).
    #[wasm_bindgen(js_name = fetch)]
    pub fn fetch_request(request: &web_sys::Request) -> js_sys::Promise;
}

/// Views a value as a wire object, if it is a non-null object.
pub fn wire(value: &JsValue) -> Option<&Wire> {
    value.is_object().then(|| value.unchecked_ref::<Wire>())
}

pub fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

pub fn get(target: &JsValue, key: &str) -> JsValue {
    if !target.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `JSON.stringify`, as a Rust string ("null" for what cannot be serialized).
pub fn to_json(value: &JsValue) -> String {
    js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| "null".to_string())
}

/// A JS string, or `undefined`. Exported getters return strings this way: a `JsValue` crosses the boundary
/// as is, where an `Option<String>` return needs its own copy-out code in the module and in the glue.
pub fn string_or_undefined(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::UNDEFINED, JsValue::from_str)
}

/// A shallow copy of an object (`{...value}`).
pub fn shallow_copy(value: &JsValue) -> Object {
    let copy = Object::new();
    if let Some(obj) = value.dyn_ref::<Object>() {
        Object::assign(&copy, obj);
    }
    copy
}

/// The core's view of a user object; `None` without a string id.
pub fn presence_of(user: &JsValue) -> Option<UserPresence> {
    let user = wire(user)?;
    let id = user.id().as_string()?;
    Some(UserPresence {
        id,
        state: PresenceState {
            online: user.online().as_bool().unwrap_or(false),
            status: user.status().as_string(),
            last_active: user.last_active().as_string(),
        },
    })
}

/// A real JS `Error` with `code`, and `StatusCode`/`status` when a server answered.
pub fn to_js_error(error: &ClientError) -> JsValue {
    let js = js_sys::Error::new(&error.message);
    set(&js, "code", &JsValue::from_f64(error.code as f64));
    if let Some(status) = error.status {
        set(&js, "StatusCode", &JsValue::from_f64(f64::from(status)));
        set(&js, "status", &JsValue::from_f64(f64::from(status)));
    }
    js.into()
}

/// The message of whatever a JS call threw.
pub fn describe(thrown: &JsValue) -> String {
    if let Some(error) = thrown.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    thrown.as_string().unwrap_or_else(|| to_json(thrown))
}

pub fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::new(client_code::INVALID_ARGUMENT, message)
}

/// Reads the API error envelope of a failed answer (or the `error` of a `connection.error` frame).
pub fn rejection_of(body: &JsValue, http_status: u16) -> Rejection {
    let (code, message, status) = match wire(body) {
        Some(body) => (
            get(body, "code").as_f64().map(|c| c as i64),
            get(body, "message").as_string(),
            get(body, "StatusCode").as_f64().map(|s| s as u16),
        ),
        None => (None, None, None),
    };
    Rejection {
        code: code.unwrap_or(-1),
        status: status.unwrap_or(http_status),
        message: message
            .unwrap_or_else(|| ["HTTP status ", &decimal(i64::from(http_status))].concat()),
    }
}

/// Milliseconds since the epoch: the clock the core runs on.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

pub fn log_error(context: &str, thrown: &JsValue) {
    web_sys::console::error_2(&JsValue::from_str(context), thrown);
}
