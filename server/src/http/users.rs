//! `POST /users`, `PATCH /users`, `GET /users`. A user write names each user at most once and is paced per user
//! token ([`crate::http::rate`]): each write is an event to everyone following the user. (A member change draws on
//! the same pace: each is an event to every watcher of the channel.)

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use presence_protocol::{
    JsonMap, PartialUpdateUsersRequest, QueryUsersPayload, QueryUsersResponse, UpdateUsersResponse,
    User,
};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::http::extract::{Authenticated, JsonBody};
use crate::http::layers::duration;
use crate::http::rate::{Limited, Quota};
use crate::state::AppState;

/// `POST /users` as read from the wire: the protocol's `UpsertUsersRequest`, except that a user id given twice
/// in `users` (a JSON object may repeat a key, which a plain map would resolve silently) is refused.
#[derive(Default, Deserialize)]
pub struct UpsertBody {
    #[serde(deserialize_with = "unique_user_ids")]
    users: BTreeMap<String, JsonMap>,
}

fn unique_user_ids<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, JsonMap>, D::Error> {
    struct UniqueIds;

    impl<'de> Visitor<'de> for UniqueIds {
        type Value = BTreeMap<String, JsonMap>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of users keyed by id")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut users = BTreeMap::new();
            while let Some((id, user)) = map.next_entry::<String, JsonMap>()? {
                if users.contains_key(&id) {
                    return Err(serde::de::Error::custom(named_twice(&id)));
                }
                users.insert(id, user);
            }
            Ok(users)
        }
    }

    deserializer.deserialize_map(UniqueIds)
}

fn named_twice(id: &str) -> String {
    format!("user {id:?} is named more than once in users")
}

pub async fn upsert_users(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    body: Result<JsonBody<UpsertBody>, Error>,
) -> Result<Response, Response> {
    const OP: &str = "UpdateUsers";
    let JsonBody(req) = body.map_err(|e| e.in_operation(OP).into_response())?;
    let quota = take_write(&app, &auth).map_err(IntoResponse::into_response)?;
    let users = app
        .hub
        .upsert_users(&auth.caller, &req.users)
        .await
        .map_err(|e| with_quota(e.into_response(), quota))?;
    Ok(with_quota(users_reply(StatusCode::CREATED, users), quota))
}

pub async fn partial_update_users(
    State(app): State<Arc<AppState>>,
    auth: Authenticated,
    body: Result<JsonBody<PartialUpdateUsersRequest>, Error>,
) -> Result<Response, Response> {
    const OP: &str = "UpdateUsersPartial";
    let JsonBody(req) = body.map_err(|e| e.in_operation(OP).into_response())?;
    let mut seen = HashSet::with_capacity(req.users.len());
    if let Some(twice) = req.users.iter().find(|u| !seen.insert(u.id.as_str())) {
        return Err(Error::input(named_twice(&twice.id))
            .in_operation(OP)
            .into_response());
    }
    let quota = take_write(&app, &auth).map_err(IntoResponse::into_response)?;
    let users = app
        .hub
        .partial_update_users(&auth.caller, &req.users)
        .await
        .map_err(|e| with_quota(e.into_response(), quota))?;
    Ok(with_quota(users_reply(StatusCode::OK, users), quota))
}

/// Takes one write from the caller's quota: the quota left (none for callers without one), or the refusal.
pub(super) fn take_write(app: &AppState, auth: &Authenticated) -> Result<Option<Quota>, Limited> {
    app.write_limits
        .take(&auth.caller, Instant::now())
        .transpose()
}

/// `response` with the caller's `X-RateLimit-*` headers, if they have a quota.
pub(super) fn with_quota(mut response: Response, quota: Option<Quota>) -> Response {
    if let Some(quota) = quota {
        quota.apply(&mut response);
    }
    response
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
