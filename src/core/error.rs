//! The one error type of the client: an API error code (or a client code below) plus the HTTP status when a
//! server answered.

use presence_protocol::ApiError;

/// Codes for failures that did not come from a server answer. They never collide with API codes (all < 100).
pub mod client_code {
    /// A bad argument: missing id, a filter that is not an object, an unknown option value.
    pub const INVALID_ARGUMENT: i64 = 1000;
    /// The call needs a connected user: call `connectUser` first.
    pub const NOT_CONNECTED: i64 = 1001;
    /// The first WebSocket connection could not be established within the connect budget.
    pub const CONNECTION_FAILED: i64 = 1002;
    /// A pending `connectUser` was abandoned by `disconnectUser`.
    pub const DISCONNECTED: i64 = 1003;
    /// The request never got an answer (network error, CORS, timeout).
    pub const NETWORK: i64 = 1004;
    /// The server answered with something that is not the expected JSON.
    pub const BAD_RESPONSE: i64 = 1005;
    /// The token provider failed or returned something other than a string.
    pub const TOKEN_PROVIDER: i64 = 1006;
}

/// A code or status in decimal, for messages. `to_string` on integers does not go through `format!`.
pub fn decimal(n: i64) -> String {
    n.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: i64,
    /// The HTTP status of the server's answer, when there was one.
    pub status: Option<u16>,
    pub message: String,
}

impl ClientError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ClientError {
            code,
            status: None,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(client_code::INVALID_ARGUMENT, message)
    }

    pub fn not_connected(call: &str) -> Self {
        Self::new(
            client_code::NOT_CONNECTED,
            [call, "() needs a connected user: call connectUser() first"].concat(),
        )
    }

    /// An error the server answered with; `context` names the operation.
    pub fn from_api(context: &str, error: &ApiError) -> Self {
        ClientError {
            code: error.code,
            status: (error.status_code != 0).then_some(error.status_code),
            message: [
                context,
                " failed with code ",
                &decimal(error.code),
                ": ",
                &error.message,
            ]
            .concat(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}
