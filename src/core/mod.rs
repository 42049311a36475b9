//! The target-independent client: every decision the browser client makes, with no IO and no clock.
//!
//! Inputs arrive with the current time (`now`, milliseconds on a monotonic clock chosen by the caller); outputs are
//! polled as [`Effect`]s and the next deadline as [`Session::poll_timeout`]. The `web` layer carries the effects out
//! with the browser's WebSocket, fetch and timers; the tests here drive the same code with a manual clock.

pub mod backoff;
pub mod error;
pub mod listeners;
pub mod session;
pub mod store;
pub mod subscriptions;

pub use backoff::Backoff;
pub use error::{client_code, decimal, ClientError};
pub use listeners::{dispatch, ListenerId, Listeners};
pub use session::{Config, Effect, Frame, FrameVerdict, Rejection, Session, SocketId};
pub use store::{PresenceState, UserPresence, UserStore};
pub use subscriptions::{Subscription, Subscriptions};

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// A random UUID v4 in its canonical text form, from the caller's seeded generator.
pub fn uuid_v4(rng: &mut fastrand::Rng) -> String {
    let mut bytes = rng.u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_has_version_and_variant() {
        let mut rng = fastrand::Rng::with_seed(7);
        let id = super::uuid_v4(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, super::uuid_v4(&mut rng));
    }
}
