//! `POST /channels/{type}/{id}/query` (and its distinct-channel form), `POST /channels`, stop-watching, and
//! `POST /channels/{type}/{id}` (members added and removed).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use presence_protocol::{
    ChannelQueryRequest, DurationResponse, QueryChannelsRequest, QueryChannelsResponse,
    UpdateChannelRequest,
};

use crate::error::Error;
use crate::http::extract::{ApiPath, Authenticated, JsonBody};
use crate::http::layers::duration;
use crate::http::users::{take_write, with_quota};
use crate::state::AppState;

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub async fn query_channel(
    State(app): State<Arc<AppState>>,
    ApiPath((channel_type, channel_id)): ApiPath<(String, String)>,
    auth: Authenticated,
    body: Result<JsonBody<ChannelQueryRequest>, Error>,
) -> Result<Response, Error> {
    let JsonBody(req) = body.map_err(|e| e.in_operation("GetOrCreateChannel"))?;
    channel_query(&app, &auth, &req, &channel_type, Some(&channel_id)).await
}

pub async fn query_distinct_channel(
    State(app): State<Arc<AppState>>,
    ApiPath(channel_type): ApiPath<String>,
    auth: Authenticated,
    body: Result<JsonBody<ChannelQueryRequest>, Error>,
) -> Result<Response, Error> {
    let JsonBody(req) = body.map_err(|e| e.in_operation("GetOrCreateChannel"))?;
    channel_query(&app, &auth, &req, &channel_type, None).await
}

async fn channel_query(
    app: &AppState,
    auth: &Authenticated,
    req: &ChannelQueryRequest,
    channel_type: &str,
    channel_id: Option<&str>,
) -> Result<Response, Error> {
    let conn = auth.connection_id(req.connection_id.as_deref());
    let mut state = app
        .hub
        .query_channel(&auth.caller, conn, channel_type, channel_id, req)
        .await?;
    state.duration = Some(duration());
    Ok(created(state))
}

pub async fn query_channels(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    body: Result<JsonBody<QueryChannelsRequest>, Error>,
) -> Result<Response, Error> {
    let JsonBody(req) = body.map_err(|e| e.in_operation("QueryChannels"))?;
    let conn = auth.connection_id(req.connection_id.as_deref());
    let channels = app.hub.query_channels(&auth.caller, conn, &req).await?;
    Ok(created(QueryChannelsResponse {
        channels,
        duration: duration(),
    }))
}

/// A body that may name the connection and nothing else the server reads.
#[derive(Default, serde::Deserialize)]
pub struct ConnectionBody {
    #[serde(default)]
    connection_id: Option<String>,
}

pub async fn stop_watching(
    State(app): State<Arc<AppState>>,
    ApiPath((channel_type, channel_id)): ApiPath<(String, String)>,
    auth: Authenticated,
    JsonBody(req): JsonBody<ConnectionBody>,
) -> Result<Response, Error> {
    let conn = auth.connection_id(req.connection_id.as_deref());
    app.hub
        .stop_watching(&auth.caller, conn, &format!("{channel_type}:{channel_id}"))
        .await?;
    Ok(created(DurationResponse {
        duration: duration(),
    }))
}

/// `POST /channels/{type}/{id}`: Stream's channel update, of which this server takes `add_members` and
/// `remove_members` (what `channel.addMembers` / `removeMembers` send). A user token's changes draw on its user
/// write pace: each is an event to every watcher of the channel.
pub async fn update_channel(
    State(app): State<Arc<AppState>>,
    ApiPath((channel_type, channel_id)): ApiPath<(String, String)>,
    auth: Authenticated,
    body: Result<JsonBody<UpdateChannelRequest>, Error>,
) -> Result<Response, Response> {
    let JsonBody(req) = body.map_err(|e| e.in_operation("UpdateChannel").into_response())?;
    let quota = take_write(&app, &auth).map_err(IntoResponse::into_response)?;
    let mut answer = app
        .hub
        .update_members(&auth.caller, &channel_type, &channel_id, &req)
        .await
        .map_err(|e| with_quota(e.into_response(), quota))?;
    answer.duration = duration();
    Ok(with_quota(created(answer), quota))
}
