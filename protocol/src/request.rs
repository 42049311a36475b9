//! Request and response bodies of the REST endpoints, and the `json` payload of the WebSocket connect URL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ChannelMember, ChannelResponse, ChannelStateResponse, JsonMap, User};

/// Paging numbers (`limit`, `offset`, `member_limit`): absent, `null` or a non-negative integer. Anything else
/// (a negative or fractional number, a string) is refused with a message naming the field, not clamped.
mod paging {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn number<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Option<u64>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(D::Error::custom(format!(
                "{field} must be a non-negative integer, got {other}"
            ))),
        }
    }

    macro_rules! fields {
        ($($field:ident),*) => {$(
            pub fn $field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
                number(d, stringify!($field))
            }
        )*};
    }
    fields!(limit, offset, member_limit);
}

/// The `json` query parameter of `GET /connect`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConnectPayload {
    pub user_id: String,
    /// The user object given to `connectUser`, applied as a partial update on connect.
    #[serde(default)]
    pub user_details: JsonMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
}

/// `POST /users`: full-replace upsert, keyed by user id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpsertUsersRequest {
    pub users: BTreeMap<String, JsonMap>,
}

/// One element of `PATCH /users`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartialUserUpdate {
    pub id: String,
    #[serde(default)]
    pub set: JsonMap,
    #[serde(default)]
    pub unset: Vec<String>,
}

/// `PATCH /users`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartialUpdateUsersRequest {
    pub users: Vec<PartialUserUpdate>,
}

/// The answer to `POST /users` and `PATCH /users`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateUsersResponse {
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub membership_deletion_task_id: String,
    #[serde(default)]
    pub duration: String,
}

/// One sort key; `direction` is 1 (ascending) or -1 (descending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortParam {
    pub field: String,
    #[serde(default = "ascending")]
    pub direction: i64,
}

fn ascending() -> i64 {
    1
}

/// The `payload` query parameter of `GET /users`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryUsersPayload {
    pub filter_conditions: JsonMap,
    #[serde(default)]
    pub sort: Vec<SortParam>,
    #[serde(default)]
    pub presence: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::limit"
    )]
    pub limit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::offset"
    )]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
}

/// The answer to `GET /users`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryUsersResponse {
    pub users: Vec<User>,
    #[serde(default)]
    pub duration: String,
}

/// Pagination of members or watchers inside a channel query.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pagination {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::limit"
    )]
    pub limit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::offset"
    )]
    pub offset: Option<u64>,
}

/// `POST /channels/{type}/{id}/query` and `POST /channels/{type}/query`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelQueryRequest {
    /// Channel data for creation: `members` (ids or `{user_id}` objects) and custom fields.
    #[serde(default)]
    pub data: JsonMap,
    #[serde(default)]
    pub state: bool,
    #[serde(default)]
    pub watch: bool,
    #[serde(default)]
    pub presence: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Pagination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchers: Option<Pagination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
}

/// `POST /channels`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryChannelsRequest {
    pub filter_conditions: JsonMap,
    #[serde(default)]
    pub sort: Vec<SortParam>,
    #[serde(default)]
    pub state: bool,
    #[serde(default)]
    pub watch: bool,
    #[serde(default)]
    pub presence: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::limit"
    )]
    pub limit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::offset"
    )]
    pub offset: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "paging::member_limit"
    )]
    pub member_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
}

/// The answer to `POST /channels`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryChannelsResponse {
    pub channels: Vec<ChannelStateResponse>,
    #[serde(default)]
    pub duration: String,
}

/// `POST /channels/{type}/{id}`: Stream's channel update, of which this server takes the member changes, as the
/// SDKs' `addMembers` / `removeMembers` (JS) and `add_members` / `remove_members` (Python) send them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateChannelRequest {
    /// Users to make members: ids or `{user_id, ...}` objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_members: Option<serde_json::Value>,
    /// Members to remove: ids (or `{user_id}` objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_members: Option<serde_json::Value>,
    /// The system message an update may announce itself with (the Python SDK always sends `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
    /// Every other field of the body (`hide_history`, `data`, `add_moderators`, ...), for the server to judge.
    #[serde(flatten)]
    pub other: JsonMap,
}

/// The answer to `POST /channels/{type}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateChannelResponse {
    pub channel: ChannelResponse,
    #[serde(default)]
    pub members: Vec<ChannelMember>,
    #[serde(default)]
    pub duration: String,
}

/// A body that carries only `duration` (stop-watching).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DurationResponse {
    #[serde(default)]
    pub duration: String,
}
