//! The server's one error type: an API error code with its HTTP status, answered as the protocol's envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presence_protocol::codes::error_code;
use presence_protocol::ApiError;

/// A failed request. Its JSON form is the protocol's error envelope; `duration` is filled by the handler wrapper.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: i64,
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: i64, status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            status,
            message: message.into(),
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Failure::new(error_code::INPUT, StatusCode::BAD_REQUEST, message)
    }

    pub fn auth(code: i64, message: impl Into<String>) -> Self {
        Failure::new(code, StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Failure::new(error_code::DOES_NOT_EXIST, StatusCode::NOT_FOUND, message)
    }

    pub fn not_allowed(message: impl Into<String>) -> Self {
        Failure::new(error_code::NOT_ALLOWED, StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Failure::new(
            error_code::INTERNAL,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }

    pub fn payload_too_big(message: impl Into<String>) -> Self {
        Failure::new(
            error_code::PAYLOAD_TOO_BIG,
            StatusCode::PAYLOAD_TOO_LARGE,
            message,
        )
    }

    /// Prefix the message with the operation, in the style of the real backend:
    /// `UpdateUsers failed with error: "<detail>"`.
    pub fn in_operation(mut self, operation: &str) -> Self {
        self.message = format!("{operation} failed with error: \"{}\"", self.message);
        self
    }

    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(self.code, self.status.as_u16(), self.message.clone())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = self.to_api_error();
        body.duration = crate::rest::duration();
        (self.status, axum::Json(body)).into_response()
    }
}
