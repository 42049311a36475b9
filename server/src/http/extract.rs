//! Extractors whose rejections are domain errors, answered in the protocol's envelope: the authenticated caller
//! (API key and token), path parameters and JSON bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};
use crate::model::Caller;
use crate::state::AppState;

/// The query string of a call, as name → value.
fn query_params(parts: &Parts) -> Result<HashMap<String, String>, Error> {
    Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| Error::input(format!("invalid query string: {e}")))
}

/// A REST call whose API key and token were checked: who is calling, and the query string.
pub struct Authenticated {
    pub caller: Caller,
    pub query: HashMap<String, String>,
}

impl Authenticated {
    /// The connection the call binds subscriptions to: `connection_id` from the body if given, else the query.
    pub fn connection_id<'a>(&'a self, from_body: Option<&'a str>) -> Option<&'a str> {
        from_body.or_else(|| self.query.get("connection_id").map(String::as_str))
    }
}

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let query = query_params(parts)?;
        let checked = (|| {
            if query.get("api_key").map(String::as_str) != Some(state.api_key.as_str()) {
                return Err(Error::new(
                    ErrorKind::ApiKey,
                    "api_key not found or invalid",
                ));
            }
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
            if header("stream-auth-type") == Some("anonymous") {
                return Err(Error::new(
                    ErrorKind::Authentication,
                    "anonymous access is not enabled",
                ));
            }
            let token = header("authorization").unwrap_or("");
            state.verifier.verify(token, chrono::Utc::now().timestamp())
        })();
        match checked {
            Ok(caller) => Ok(Authenticated { caller, query }),
            Err(e) => {
                state.count_auth_failure();
                Err(e)
            }
        }
    }
}

/// Path parameters; a path that does not decode is an input error.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| Error::input(format!("invalid path: {e}")))
    }
}

/// A JSON body; an empty (or all-blank) body is the type's default.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                Error::new(ErrorKind::PayloadTooBig, "request body is too large")
            }
            other => Error::input(format!("could not read the request body: {other}")),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Error::input(format!("invalid JSON request body: {e}")))
    }
}
