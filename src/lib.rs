//! `presence-client`: user presence for the browser (online state, status text, last active, invisibility) over
//! the Stream Chat v1 wire protocol, as a drop-in for the presence subset of the `stream-chat` JS SDK.
//!
//! [`core`] decides everything and does no IO; `web` (compiled for wasm32 only) is the thin layer that owns the
//! browser's WebSocket, fetch, timers and page events and exposes the JS API.

pub mod core;

#[cfg(target_arch = "wasm32")]
pub mod web;
