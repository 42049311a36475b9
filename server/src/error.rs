//! The server's one domain error: what went wrong, as a protocol error code and a message. It knows nothing of
//! HTTP; the edges (`http`, `ws`) turn it into a status and the protocol's envelope.

use std::fmt;

use presence_protocol::codes::error_code;

/// What kind of failure, each with its stable protocol code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (code 4).
    Input,
    /// The API key is missing or wrong (code 2).
    ApiKey,
    /// No usable credentials (code 5).
    Authentication,
    /// The token's `exp` has passed (code 40).
    TokenExpired,
    /// The token's `nbf` is in the future (code 41).
    TokenNotValidYet,
    /// The token's `iat` is in the future (code 42).
    TokenUsedBeforeIssuedAt,
    /// The token's signature or algorithm is not accepted (code 43).
    TokenSignatureInvalid,
    /// The thing named does not exist (code 16).
    NotFound,
    /// The caller may not do this (code 17).
    NotAllowed,
    /// The request body is too large (code 22).
    PayloadTooBig,
    /// The user already holds the most connections allowed (code 71).
    TooManyConnections,
    /// Too many requests now; retry later (code 9).
    RateLimited,
    /// The server failed (code -1).
    Internal,
}

impl ErrorKind {
    /// The protocol's error code.
    pub fn code(self) -> i64 {
        match self {
            ErrorKind::Input => error_code::INPUT,
            ErrorKind::ApiKey => error_code::ACCESS_KEY,
            ErrorKind::Authentication => error_code::AUTHENTICATION,
            ErrorKind::TokenExpired => error_code::TOKEN_EXPIRED,
            ErrorKind::TokenNotValidYet => error_code::TOKEN_NOT_VALID_YET,
            ErrorKind::TokenUsedBeforeIssuedAt => error_code::TOKEN_USED_BEFORE_ISSUED_AT,
            ErrorKind::TokenSignatureInvalid => error_code::TOKEN_SIGNATURE_INVALID,
            ErrorKind::NotFound => error_code::DOES_NOT_EXIST,
            ErrorKind::NotAllowed => error_code::NOT_ALLOWED,
            ErrorKind::PayloadTooBig => error_code::PAYLOAD_TOO_BIG,
            ErrorKind::TooManyConnections => error_code::TOO_MANY_CONNECTIONS,
            ErrorKind::RateLimited => error_code::RATE_LIMIT,
            ErrorKind::Internal => error_code::INTERNAL,
        }
    }

    /// Whether the failure is about credentials.
    pub fn is_auth(self) -> bool {
        matches!(
            self,
            ErrorKind::ApiKey
                | ErrorKind::Authentication
                | ErrorKind::TokenExpired
                | ErrorKind::TokenNotValidYet
                | ErrorKind::TokenUsedBeforeIssuedAt
                | ErrorKind::TokenSignatureInvalid
        )
    }
}

/// A failed operation: its kind, what went wrong, and the operation it failed in once something names it (the
/// driver names every operation it runs, an edge the requests it refuses itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<&'static str>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            operation: None,
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Input, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn not_allowed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotAllowed, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The protocol's error code.
    pub fn code(&self) -> i64 {
        self.kind.code()
    }

    /// The message as clients read it: with the operation, in the style of the real backend
    /// (`UpdateUsers failed with error: "<detail>"`), once one is named.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Names the operation the error happened in, unless one is named already (the innermost name stays).
    pub fn in_operation(mut self, operation: &'static str) -> Self {
        self.operation.get_or_insert(operation);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operation {
            Some(operation) => write!(f, "{operation} failed with error: \"{}\"", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}
