//! Bindings of `frames.js`: the socket's message handler, which parses frames in JS and hands the module the
//! fields the session decides on in one call (what it reads written into the module's memory), and the cache
//! write of a user event.

use js_sys::{Function, Object};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/web/frames.js")]
extern "C" {
    /// Installs `ws.onmessage`, which parses each frame, writes its events' strings into the `text_len` bytes at
    /// `text` and their count, the time and each one's flags and string ends into the doubles at `header` in
    /// `memory`, then calls `on_frame` once with the event, or an array of a batch's events (see
    /// [`crate::web::reader::FrameReader::read`]).
    #[wasm_bindgen(js_name = receiveFrames)]
    pub fn receive_frames(
        ws: &web_sys::WebSocket,
        on_frame: &Function,
        memory: &JsValue,
        header: u32,
        text: u32,
        text_len: u32,
    );
    /// `users[event.user.id] = event.user`, without the id crossing as a string.
    #[wasm_bindgen(js_name = cacheEventUser)]
    pub fn cache_event_user(users: &Object, event: &JsValue);
}
