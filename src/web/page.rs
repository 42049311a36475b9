//! The page lifecycle events the connection follows: `online`, `pageshow`, `resume` and `visibilitychange` (to
//! visible) wake it, `offline` drops its socket, `pagehide` and `freeze` suspend it (a frozen page runs no
//! JavaScript: it closes as it goes, so that peers see it offline after the grace rather than after the server's
//! client silence limit). Listeners are removed when `PageEvents` is dropped.

use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

use crate::web::js;

type Listener = Closure<dyn FnMut(web_sys::Event)>;

#[must_use = "dropping PageEvents removes its listeners"]
pub struct PageEvents {
    registered: Vec<(EventTarget, &'static str, Listener)>,
}

impl PageEvents {
    /// Installs the listeners; `None` outside a window (workers have no page lifecycle).
    pub fn install(
        on_wake: impl Fn() + Clone + 'static,
        on_offline: impl Fn() + 'static,
        on_hide: impl Fn() + Clone + 'static,
    ) -> Option<PageEvents> {
        let window = web_sys::window()?;
        let document = window.document();
        let mut events = PageEvents {
            registered: Vec::with_capacity(7),
        };
        let target: &EventTarget = window.as_ref();
        for name in ["online", "pageshow"] {
            let wake = on_wake.clone();
            events.add(target, name, Closure::new(move |_: web_sys::Event| wake()));
        }
        events.add(
            target,
            "offline",
            Closure::new(move |_: web_sys::Event| on_offline()),
        );
        let hide = on_hide.clone();
        events.add(
            target,
            "pagehide",
            Closure::new(move |_: web_sys::Event| hide()),
        );
        if let Some(document) = document {
            let wake = on_wake.clone();
            events.add(
                document.as_ref(),
                "resume",
                Closure::new(move |_: web_sys::Event| wake()),
            );
            events.add(
                document.as_ref(),
                "freeze",
                Closure::new(move |_: web_sys::Event| on_hide()),
            );
            let doc = document.clone();
            let listener = Closure::new(move |_: web_sys::Event| {
                // Read as a string: the typed getter brings an enum table to the glue and a panic path here.
                if js::get(&doc, "visibilityState").as_string().as_deref() == Some("visible") {
                    on_wake();
                }
            });
            events.add(document.as_ref(), "visibilitychange", listener);
        }
        Some(events)
    }

    fn add(&mut self, target: &EventTarget, name: &'static str, listener: Listener) {
        if target
            .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
            .is_ok()
        {
            self.registered.push((target.clone(), name, listener));
        }
    }
}

impl Drop for PageEvents {
    fn drop(&mut self) {
        for (target, name, listener) in &self.registered {
            let _ =
                target.remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        }
    }
}
