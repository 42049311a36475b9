//! Tasks and timers: the one future type handed to JS as a Promise, background tasks, one-shot timers, and
//! releasing values after the current JS task.

use std::future::Future;
use std::pin::Pin;

use crate::core::ClientError;
use crate::web::js;

/// The one future type handed to JS as a Promise (one instantiation of the executor glue keeps the bundle small).
pub type Task = Pin<Box<dyn Future<Output = Result<wasm_bindgen::JsValue, ClientError>>>>;

/// Runs `task` as a JS Promise; its error becomes a JS `Error` with `code`.
pub fn promise(task: Task) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(
        async move { task.await.map_err(|e| js::to_js_error(&e)) },
    )
}

/// Runs `task` in the background.
pub fn spawn(task: Pin<Box<dyn Future<Output = ()>>>) {
    wasm_bindgen_futures::spawn_local(task);
}

/// The longest delay `setTimeout` holds (2^31 - 1 ms, about 24.8 days); a longer one fires at once.
pub const MAX_TIMER_MS: u32 = i32::MAX as u32;

/// A timer running `callback` once after `ms` (at most [`MAX_TIMER_MS`]), cancelled when dropped. The callback is
/// boxed so that every timer of the client shares one instance of the closure glue (gloo's `Timeout` is generic
/// over it).
pub fn timeout(ms: u32, callback: Box<dyn FnOnce()>) -> gloo_timers::callback::Timeout {
    gloo_timers::callback::Timeout::new(ms.min(MAX_TIMER_MS), callback)
}

/// Drops `value` once the current JS task has returned: for handlers and timers that may be running right now.
pub fn drop_later(value: Box<dyn std::any::Any>) {
    spawn(Box::pin(async move { drop(value) }));
}
