//! The REST edge: extractors (the authenticated caller, path, body), layers (timing, CORS, CORP), the handlers,
//! and the one place a domain error becomes an HTTP status and the protocol's envelope.

pub mod app;
pub mod channels;
pub mod error;
pub mod extract;
pub mod layers;
pub mod ops;
pub mod rate;
pub mod users;
