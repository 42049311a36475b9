//! One browser WebSocket and its handlers. The handlers live exactly as long as the `Socket`: dropping it
//! detaches them and closes the socket if it is still open.

use js_sys::Array;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, Event, WebSocket};

use crate::core::UserPresence;
use crate::core::{Millis, SocketId};
use crate::web::frames::receive_frames;
use crate::web::reader::{FrameReader, Inbound};

/// Every handler has this one type, as have the page listeners: each closure type costs its own glue. (The frame
/// handler is called with the parsed event or an array of them, not an `Event`: the type only names the
/// argument's ABI.)
type Handler = Closure<dyn FnMut(Event)>;

#[wasm_bindgen(module = "/src/web/share.js")]
extern "C" {
    /// A WebSocket to `url`, or a link over the one another tab holds for the same user, server and key (shared
    /// by the client `share_id`; empty: a socket of its own).
    #[wasm_bindgen(js_name = openSocket, catch)]
    fn open_socket(url: &str, share_id: &str) -> Result<WebSocket, JsValue>;
}

#[must_use = "dropping a Socket closes it"]
pub struct Socket {
    pub id: SocketId,
    ws: WebSocket,
    _on_frame: Handler,
    _on_close: Handler,
    _on_error: Handler,
}

impl Socket {
    pub fn open(
        id: SocketId,
        url: &str,
        share_id: &str,
        mut on_frame: impl FnMut(&Inbound, Millis, bool) -> Option<UserPresence> + 'static,
        mut on_close: impl FnMut(CloseEvent) + 'static,
        on_error: impl FnMut(Event) + 'static,
    ) -> Result<Socket, JsValue> {
        let ws = open_socket(url, share_id)?;
        let mut reader = FrameReader::new();
        let (header, text, text_len) = reader.buffers();
        // One call for a frame's events (a batch's in order): the event itself when it is one, else an array.
        // Each event's user, decoded by the session, comes back so that its strings are reused.
        let frame_handler = Handler::new(move |events: Event| {
            let events = JsValue::from(events);
            let count = reader.count();
            for index in 0..count {
                let event = if count == 1 {
                    events.clone()
                } else {
                    events.unchecked_ref::<Array>().get(index)
                };
                if let Some(inbound) = reader.read(index, event) {
                    let user = on_frame(&inbound, reader.now(), index + 1 == count);
                    reader.recycle(inbound, user);
                }
            }
        });
        let on_close = Handler::new(move |event: Event| on_close(event.unchecked_into()));
        let on_error = Handler::new(on_error);
        receive_frames(
            &ws,
            frame_handler.as_ref().unchecked_ref(),
            &wasm_bindgen::memory(),
            header,
            text,
            text_len,
        );
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Socket {
            id,
            ws,
            _on_frame: frame_handler,
            _on_close: on_close,
            _on_error: on_error,
        })
    }

    /// The browser's socket, whose `close` event can be awaited after this `Socket` is gone.
    pub fn ws(&self) -> WebSocket {
        self.ws.clone()
    }

    pub fn send(&self, text: &str) {
        // A socket that is not open drops the frame; the session's deadlines notice a dead socket. Not even
        // handed to it: a closed socket logs an error for each send (a page that ran again after a freeze has
        // its ping due before it has read the close).
        if self.ws.ready_state() == web_sys::WebSocket::OPEN {
            let _ = self.ws.send_with_str(text);
        }
    }

    /// Closes with `code` (`None`: without a code, as for an abandoned socket) and detaches the handlers.
    pub fn close(&self, code: Option<u16>, reason: &str) {
        self.detach();
        let _ = match code {
            Some(code) => self.ws.close_with_code_and_reason(code, reason),
            None => self.ws.close(),
        };
    }

    fn detach(&self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.detach();
        if self.ws.ready_state() <= WebSocket::OPEN {
            let _ = self.ws.close();
        }
    }
}
