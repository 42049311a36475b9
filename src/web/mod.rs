//! The browser layer: the exported JS API (`Client`, `Channel`), and the only code that touches JS. It turns
//! socket frames, timers and page events into core inputs, and carries out the core's effects.
//!
//! Data flows one way: a frame arrives on a [`socket`] (parsed in JS by [`frames`], and handed over in one call),
//! the [`driver`] hands it to [`inbound`], which decodes it with the core's rules, feeds it to the session and mirrors it into the JS cache; the session's effects go
//! back to the [`driver`] (socket, timers, page events, events for the app). App calls are checked and built in
//! [`requests`], sent by [`rest`] and their answers folded in by [`fold`] (their users go to the session, whose
//! decisions the [`driver`] carries out); [`client`] and [`channel`] are the thin exported surfaces over that.
//!
//! The bundle is kept small, and these habits hold throughout: no serde and no `format!` in this layer (JSON goes
//! through the JS engine, messages are concatenated); callbacks are boxed so that one closure glue serves them
//! all; one future type crosses into JS ([`runtime`]); exported getters return `JsValue` rather than
//! `Option<String>`; scripts/build-wasm.sh minifies import and export names.

pub mod channel;
pub mod client;

mod cache;
mod credentials;
mod diagnose;
mod driver;
mod events;
mod fold;
mod frames;
mod http;
mod inbound;
mod js;
mod page;
mod reader;
mod registry;
mod requests;
mod rest;
mod runtime;
mod slots;
mod socket;
mod state;

/// talc's allocator for single-threaded wasm: about 2.6 KB gzip smaller than the default dlmalloc.
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
