//! The target-independent client: every decision the browser client makes, with no IO and no clock.
//!
//! Inputs arrive with the current time (`now`, milliseconds on a monotonic clock chosen by the caller); outputs are
//! polled as [`Effect`]s and the next deadline as [`Session::poll_timeout`]. The `web` layer carries the effects out
//! with the browser's WebSocket, fetch and timers, and reads frames, users and error envelopes with the decoders
//! here ([`wire`] is the seam); the tests here drive the same code with a manual clock.

pub mod backoff;
pub mod config;
pub mod effect;
pub mod error;
pub mod frame;
pub mod listeners;
pub mod own_user;
pub mod session;
pub mod stamp;
pub mod store;
pub mod subscriptions;
pub mod time;
pub mod token;
pub mod urls;
pub mod uuid;
pub mod wire;

pub use backoff::Backoff;
pub use config::Config;
pub use error::{client_code, decimal, ClientError};
pub use frame::{Frame, FrameVerdict, Rejection};
pub use listeners::{dispatch, ListenerId, Listeners};
pub use session::{Effect, Session, SocketId, UsersAnswer};
pub use store::{PresenceState, UserPresence, UserStore};
pub use subscriptions::{Subscription, Subscriptions};
pub use time::Millis;
pub use token::RestAttempts;
pub use urls::Endpoints;
pub use uuid::uuid_v4;
pub use wire::{WireError, WireEvent, WireUser};
