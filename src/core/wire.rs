//! Read access to parsed JSON, whatever holds it: the rules that decode frames, users and error envelopes
//! (`Frame::decode`, `UserPresence::decode`, `Rejection::decode`) are written once against these traits. The
//! browser layer implements them for JS objects; `presence_protocol`'s serde types implement them here (tests,
//! native callers).

use presence_protocol::{ApiError, Event, User};

/// A parsed event frame: the fields the session reads beyond its `type` and `connection_id`.
pub trait WireEvent {
    type User: WireUser;
    type Error: WireError;
    /// The event's `user`, when it is an object.
    fn user(&self) -> Option<Self::User>;
    /// The connected user's own object (`me`), when it is an object.
    fn me(&self) -> Option<Self::User>;
    /// The `error` of a `connection.error` frame, when it is an object.
    fn error(&self) -> Option<Self::Error>;
    /// The event's `created_at`: read only to date a `user` that carries no time of its own.
    fn created_at(&self) -> Option<String> {
        None
    }
}

/// A user object.
pub trait WireUser {
    fn id(&self) -> Option<String>;
    fn online(&self) -> Option<bool>;
    fn status(&self) -> Option<String>;
    fn last_active(&self) -> Option<String>;
    /// Read only when `last_active` is no timestamp.
    fn updated_at(&self) -> Option<String> {
        None
    }
}

/// An API error envelope.
pub trait WireError {
    fn code(&self) -> Option<i64>;
    /// `StatusCode`.
    fn status(&self) -> Option<u16>;
    fn message(&self) -> Option<String>;
}

impl<'a> WireEvent for &'a Event {
    type User = &'a User;
    type Error = &'a ApiError;

    fn user(&self) -> Option<&'a User> {
        self.user.as_ref()
    }

    fn me(&self) -> Option<&'a User> {
        self.me.as_ref()
    }

    fn error(&self) -> Option<&'a ApiError> {
        self.error.as_ref()
    }

    fn created_at(&self) -> Option<String> {
        self.created_at.clone()
    }
}

impl WireUser for &User {
    fn id(&self) -> Option<String> {
        Some(self.id.clone())
    }

    fn online(&self) -> Option<bool> {
        Some(self.online)
    }

    fn status(&self) -> Option<String> {
        User::status(self).map(str::to_string)
    }

    fn last_active(&self) -> Option<String> {
        self.last_active.clone()
    }

    fn updated_at(&self) -> Option<String> {
        self.updated_at.clone()
    }
}

impl WireError for &ApiError {
    fn code(&self) -> Option<i64> {
        Some(self.code)
    }

    fn status(&self) -> Option<u16> {
        Some(self.status_code)
    }

    fn message(&self) -> Option<String> {
        Some(self.message.clone())
    }
}
