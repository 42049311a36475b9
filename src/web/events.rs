//! Event subscription for the app: `on(handler)` / `on(type, handler)` returning `{ unsubscribe() }`, `off`,
//! and emitting to the listeners of a client or a channel (a throwing listener is logged, the others still run).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::{dispatch, ListenerId, Listeners};
use crate::web::js;

/// The app's listeners of one client or one channel.
#[derive(Default)]
pub struct Emitter {
    listeners: Rc<RefCell<Listeners<Function>>>,
}

/// What `on()` returns: `{ unsubscribe() }`. It shares the listener list (not the client or channel), so
/// unsubscribing works whatever became of them.
#[wasm_bindgen]
pub struct EventSubscription {
    listeners: Rc<RefCell<Listeners<Function>>>,
    id: ListenerId,
}

#[wasm_bindgen]
impl EventSubscription {
    pub fn unsubscribe(&self) {
        self.listeners.borrow_mut().remove(self.id);
    }
}

/// `(handler)` or `(eventType, handler)`; `None` for anything else.
fn arguments(
    type_or_handler: JsValue,
    handler: Option<Function>,
) -> Option<(Option<String>, Function)> {
    match (type_or_handler.as_string(), handler) {
        (Some(event_type), Some(handler)) => Some((Some(event_type), handler)),
        (None, None) => type_or_handler
            .dyn_into::<Function>()
            .ok()
            .map(|h| (None, h)),
        _ => None,
    }
}

impl Emitter {
    /// `on(handler)` / `on(type, handler)`.
    pub fn on(
        &self,
        type_or_handler: JsValue,
        handler: Option<Function>,
    ) -> Result<EventSubscription, JsValue> {
        let lone = handler.is_none() && !type_or_handler.is_string();
        let Some((event_type, handler)) = arguments(type_or_handler, handler) else {
            let message = if lone {
                "on() needs a handler function"
            } else {
                "on() takes (handler) or (eventType, handler)"
            };
            return Err(js::to_js_error(&js::invalid(message)));
        };
        let id = self
            .listeners
            .borrow_mut()
            .add(event_type.as_deref(), handler);
        Ok(EventSubscription {
            listeners: self.listeners.clone(),
            id,
        })
    }

    /// `off(handler)` / `off(type, handler)`; anything else is ignored.
    pub fn off(&self, type_or_handler: JsValue, handler: Option<Function>) {
        let Some((event_type, handler)) = arguments(type_or_handler, handler) else {
            return;
        };
        let target: &JsValue = handler.as_ref();
        self.listeners
            .borrow_mut()
            .remove_matching(event_type.as_deref(), |l| {
                AsRef::<JsValue>::as_ref(l) == target
            });
    }

    /// Calls the listeners of `event_type` with `event`.
    pub fn emit(&self, event_type: &str, event: &JsValue) {
        let failures = dispatch(&self.listeners, event_type, event, |listener, event| {
            listener.call1(&JsValue::UNDEFINED, event).map(|_| ())
        });
        for failure in failures {
            js::log_error("presence-client: an event listener threw", &failure);
        }
    }
}

/// A client-local event object: `{ type }`.
pub fn local_event(kind: &str) -> Object {
    let event = Object::new();
    js::set(&event, "type", &JsValue::from_str(kind));
    event
}
