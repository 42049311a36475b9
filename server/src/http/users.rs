//! `POST /users`, `PATCH /users`, `GET /users`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use presence_protocol::{
    PartialUpdateUsersRequest, QueryUsersPayload, QueryUsersResponse, UpdateUsersResponse,
    UpsertUsersRequest, User,
};

use crate::error::Error;
use crate::http::extract::{Authenticated, JsonBody};
use crate::http::layers::duration;
use crate::state::AppState;

pub async fn upsert_users(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    JsonBody(req): JsonBody<UpsertUsersRequest>,
) -> Result<Response, Error> {
    let users = app.hub.upsert_users(&auth.caller, &req.users).await?;
    Ok(users_reply(StatusCode::CREATED, users))
}

pub async fn partial_update_users(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    JsonBody(req): JsonBody<PartialUpdateUsersRequest>,
) -> Result<Response, Error> {
    let users = app
        .hub
        .partial_update_users(&auth.caller, &req.users)
        .await?;
    Ok(users_reply(StatusCode::OK, users))
}

/// The answer to both user writes: the users as written, keyed by id.
fn users_reply(status: StatusCode, users: BTreeMap<String, User>) -> Response {
    let body = UpdateUsersResponse {
        users,
        membership_deletion_task_id: String::new(),
        duration: duration(),
    };
    (status, Json(body)).into_response()
}

pub async fn query_users(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, Error> {
    let raw = auth
        .query
        .get("payload")
        .ok_or_else(|| Error::input("QueryUsers failed with error: \"payload is required\""))?;
    let payload: QueryUsersPayload = serde_json::from_str(raw)
        .map_err(|e| Error::input(format!("invalid payload: {e}")).in_operation("QueryUsers"))?;
    let conn = auth.connection_id(payload.connection_id.as_deref());
    let users = app.hub.query_users(&auth.caller, conn, &payload).await?;
    Ok(Json(QueryUsersResponse {
        users,
        duration: duration(),
    })
    .into_response())
}
