//! JS bindings the client needs beyond js-sys/web-sys: direct property access on wire objects (cheaper than
//! `Reflect`), JSON on JS strings without copying them into Rust, base64, the global `fetch`; the core's
//! [`crate::core::wire`] view of JS objects, so that frames, users and errors are decoded by the core's rules;
//! and small JS helpers (errors, property access, the clock).

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::{client_code, ClientError, WireError, WireEvent, WireUser};

#[wasm_bindgen]
extern "C" {
    /// Any object that came from the wire or from the app: the fields of the frame path are read through plain
    /// property access (one import each); the rest through `get`.
    pub type Wire;

    #[wasm_bindgen(method, getter, js_name = type)]
    pub fn kind(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = user)]
    pub fn user_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = me)]
    pub fn me_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = id)]
    pub fn id_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = online)]
    fn online_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = status)]
    fn status_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = last_active)]
    fn last_active_value(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn connection_id(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter)]
    pub fn cid(this: &Wire) -> JsValue;
    #[wasm_bindgen(method, getter = error)]
    fn error_value(this: &Wire) -> JsValue;
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

/// A value as an owned wire object, if it is a non-null object.
fn into_wire(value: JsValue) -> Option<Wire> {
    value.is_object().then(|| value.unchecked_into::<Wire>())
}

impl WireEvent for Wire {
    type User = Wire;
    type Error = JsValue;

    fn user(&self) -> Option<Wire> {
        into_wire(self.user_value())
    }

    fn me(&self) -> Option<Wire> {
        into_wire(self.me_value())
    }

    fn error(&self) -> Option<JsValue> {
        into_wire(self.error_value()).map(JsValue::from)
    }

    fn created_at(&self) -> Option<String> {
        get(self, "created_at").as_string()
    }
}

impl WireUser for Wire {
    fn id(&self) -> Option<String> {
        self.id_value().as_string()
    }

    fn online(&self) -> Option<bool> {
        self.online_value().as_bool()
    }

    fn status(&self) -> Option<String> {
        self.status_value().as_string()
    }

    fn last_active(&self) -> Option<String> {
        self.last_active_value().as_string()
    }

    fn updated_at(&self) -> Option<String> {
        get(self, "updated_at").as_string()
    }
}

/// Any value: what is not an object has none of the fields.
impl WireError for JsValue {
    fn code(&self) -> Option<i64> {
        get(self, "code").as_f64().map(|c| c as i64)
    }

    fn status(&self) -> Option<u16> {
        get(self, "StatusCode").as_f64().map(|s| s as u16)
    }

    fn message(&self) -> Option<String> {
        get(self, "message").as_string()
    }
}

/// The id of a user object: a non-empty string.
pub fn user_id_of(user: &JsValue) -> Option<String> {
    wire(user)
        .and_then(|u| u.id_value().as_string())
        .filter(|id| !id.is_empty())
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

/// Milliseconds since the epoch: the clock the core runs on.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

pub fn log_error(context: &str, thrown: &JsValue) {
    web_sys::console::error_2(&JsValue::from_str(context), thrown);
}
