//! Wire types of the Stream Chat v1 presence subset, shared by `presence-client` and `presence-server`.
//!
//! Everything here is plain serde data: no IO, no clock, no target-specific code. Field names and shapes follow
//! the protocol description (paths, bodies, events, error envelope); unknown keys are accepted on input so that
//! newer peers keep working, and custom user and channel fields travel flat at the top level of their object.

pub mod channel;
pub mod codes;
pub mod error;
pub mod event;
pub mod ids;
pub mod request;
pub mod user;

pub use channel::{ChannelConfig, ChannelMember, ChannelResponse, ChannelStateResponse};
pub use error::ApiError;
pub use event::Event;
pub use request::*;
pub use user::User;

/// A JSON object: custom fields, filters, channel data.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;
