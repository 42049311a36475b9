//! Errors at the HTTP edge: each domain error kind has its status; the body is the protocol's error envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presence_protocol::ApiError;

use crate::error::{Error, ErrorKind};
use crate::http::layers::duration;

/// The HTTP status of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Input => StatusCode::BAD_REQUEST,
        ErrorKind::ApiKey
        | ErrorKind::Authentication
        | ErrorKind::TokenExpired
        | ErrorKind::TokenNotValidYet
        | ErrorKind::TokenUsedBeforeIssuedAt
        | ErrorKind::TokenSignatureInvalid => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotAllowed => StatusCode::FORBIDDEN,
        ErrorKind::PayloadTooBig => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooManyConnections | ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The protocol's error envelope for `error` (without `duration`).
pub fn envelope(error: &Error) -> ApiError {
    ApiError::new(
        error.code(),
        status_of(error.kind()).as_u16(),
        error.message().to_string(),
    )
}

/// An error answered with `status` instead of its kind's own.
pub fn respond_with_status(status: StatusCode, error: &Error) -> Response {
    let mut body = envelope(error);
    body.duration = duration();
    body.status_code = status.as_u16();
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let response = respond_with_status(status_of(self.kind()), &self);
        if self.kind() == ErrorKind::RateLimited {
            // A rate limit says when to come back, as Stream's do.
            return ([(axum::http::header::RETRY_AFTER, "1")], response).into_response();
        }
        response
    }
}
