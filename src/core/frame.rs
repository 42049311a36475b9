//! Frame decoding: what the session reads of an incoming event, and the refusal an error envelope carries. The
//! browser layer decodes JS objects with exactly these functions (through [`crate::core::wire`]).

use presence_protocol::codes::event_type;
use presence_protocol::{ApiError, Event};

use crate::core::error::decimal;
use crate::core::store::{parse_stamp, UserPresence};
use crate::core::wire::{WireError, WireEvent};

/// What the session needs to know of an incoming frame.
#[derive(Debug, Clone, Default)]
pub struct Frame<'a> {
    pub kind: &'a str,
    pub connection_id: Option<&'a str>,
    /// The `error` of a `connection.error` frame.
    pub error: Option<Rejection>,
    /// The subject of `user.presence.changed` / `user.updated`, whose state replaces the cached one.
    pub user: Option<UserPresence>,
    /// The connected user's own object, when the frame carries it.
    pub me: Option<UserPresence>,
}

impl<'a> Frame<'a> {
    /// The session's view of a parsed event of type `kind`. Only `user.presence.changed` and `user.updated`
    /// replace the cached state of their `user` (in the other events it only names who acted).
    pub fn decode(kind: &'a str, connection_id: Option<&'a str>, event: &impl WireEvent) -> Self {
        let carries_user =
            kind == event_type::USER_PRESENCE_CHANGED || kind == event_type::USER_UPDATED;
        Frame {
            kind,
            connection_id,
            error: event.error().map(|error| Rejection::decode(&error, 0)),
            user: event
                .user()
                .filter(|_| carries_user)
                .and_then(|user| UserPresence::decode(&user))
                .map(|mut user| {
                    if user.state.since.is_none() {
                        user.state.since = event.created_at().as_deref().and_then(parse_stamp);
                    }
                    user
                }),
            me: event.me().and_then(|me| UserPresence::decode(&me)),
        }
    }

    /// [`Frame::decode`] of a serde-parsed event.
    pub fn from_event(event: &'a Event) -> Self {
        Frame::decode(&event.kind, event.connection_id.as_deref(), &event)
    }
}

/// Why a server refused: the `error` of a `connection.error` frame, or the envelope of a failed REST answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: i64,
    pub status: u16,
    pub message: String,
}

impl Rejection {
    /// Reads an error envelope; `http_status` stands in for a missing `StatusCode` (0 for a frame), and a
    /// missing code is -1.
    pub fn decode(error: &impl WireError, http_status: u16) -> Self {
        Rejection {
            code: error.code().unwrap_or(-1),
            status: error.status().unwrap_or(http_status),
            message: error
                .message()
                .unwrap_or_else(|| ["HTTP status ", &decimal(i64::from(http_status))].concat()),
        }
    }
}

impl From<&ApiError> for Rejection {
    fn from(error: &ApiError) -> Self {
        Rejection::decode(&error, 0)
    }
}

/// Whether the embedding layer should hand a frame to the app's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// Dispatch it.
    Dispatch,
    /// Dispatch it, but its `user` is older than what the client already holds of that user (it was overtaken,
    /// e.g. by a recovery answer): the cache keeps the newer state.
    DispatchOutdated,
    /// A frame of a superseded socket, or a handshake error: drop it.
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_frame_decodes_to_its_rejection() {
        let event: Event = serde_json::from_str(
            r#"{"type":"connection.error","error":{"code":43,"message":"bad signature","StatusCode":401}}"#,
        )
        .unwrap();
        let frame = Frame::from_event(&event);
        assert_eq!(
            frame.error,
            Some(Rejection {
                code: 43,
                status: 401,
                message: "bad signature".to_string()
            })
        );
    }

    /// An answer whose body is not an API envelope (a proxy's 502 page, say).
    struct NoEnvelope;

    impl WireError for NoEnvelope {
        fn code(&self) -> Option<i64> {
            None
        }
        fn status(&self) -> Option<u16> {
            None
        }
        fn message(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_failed_answer_without_an_envelope_reports_its_http_status() {
        let rejection = Rejection::decode(&NoEnvelope, 502);
        assert_eq!(
            rejection,
            Rejection {
                code: -1,
                status: 502,
                message: "HTTP status 502".to_string()
            }
        );
    }

    #[test]
    fn own_user_is_read_from_any_frame() {
        let event: Event = serde_json::from_str(
            r#"{"type":"health.check","connection_id":"c-1","me":{"id":"john","online":true,"status":"here"}}"#,
        )
        .unwrap();
        let frame = Frame::from_event(&event);
        assert_eq!(frame.connection_id, Some("c-1"));
        let me = frame.me.unwrap();
        assert_eq!((me.id.as_str(), me.state.online), ("john", true));
        assert!(frame.user.is_none());
    }
}
