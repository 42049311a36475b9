//! `GET /app` and `PATCH /app`: the app's settings, as Stream's `getAppSettings` / `updateAppSettings` read and
//! write them. Of the settings this server has, `webhook_url` (stored with the app's records, shared by a cluster;
//! an empty string clears it, and the `--webhook-url` flag applies again). Server tokens only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::http::extract::{Authenticated, JsonBody};
use crate::http::layers::duration;
use crate::model::Caller;
use crate::state::AppState;

/// `PATCH /app` as read: the settings this server has; others are ignored.
#[derive(Default, Deserialize)]
pub struct AppPatch {
    #[serde(default)]
    webhook_url: Option<String>,
}

pub async fn get_app(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, Error> {
    if auth.caller != Caller::Server {
        return Err(Error::not_allowed(
            "GetApp failed with error: \"only a server-side token may read the app's settings\"",
        ));
    }
    let (settings, url) = app.hub.app();
    Ok(Json(json!({
        "app": {
            "webhook_url": settings.webhook_url.as_deref().or(url.as_deref()).unwrap_or(""),
            "webhook_events": app.webhook_events,
        },
        "duration": duration(),
    }))
    .into_response())
}

pub async fn update_app(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    body: Result<JsonBody<AppPatch>, Error>,
) -> Result<Response, Error> {
    let JsonBody(patch) = body.map_err(|e| e.in_operation("UpdateApp"))?;
    app.hub.update_app(&auth.caller, patch.webhook_url).await?;
    Ok(Json(json!({ "duration": duration() })).into_response())
}
