//! The error envelope every failed REST call returns, and the `error` of a `connection.error` frame.

use serde::{Deserialize, Serialize};

use crate::codes::MORE_INFO_URL;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
    /// The HTTP status the error was (or would be) returned with.
    #[serde(rename = "StatusCode", default)]
    pub status_code: u16,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub more_info: String,
    #[serde(default)]
    pub details: Vec<i64>,
    #[serde(default)]
    pub unrecoverable: bool,
    #[serde(default)]
    pub exception_fields: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(code: i64, status_code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status_code,
            duration: String::new(),
            more_info: MORE_INFO_URL.to_string(),
            details: Vec::new(),
            unrecoverable: false,
            exception_fields: serde_json::Map::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error code {}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
