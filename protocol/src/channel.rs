//! Channel objects as returned by channel queries.

use serde::{Deserialize, Serialize};

use crate::{JsonMap, User};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Whether watchers of channels of this type get presence events of members.
    pub connect_events: bool,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub cid: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<User>,
    #[serde(default)]
    pub frozen: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub member_count: u64,
    pub config: ChannelConfig,
    #[serde(default)]
    pub own_capabilities: Vec<String>,
    /// Custom channel data, flat.
    #[serde(flatten)]
    pub custom: JsonMap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMember {
    pub user_id: String,
    pub user: User,
    #[serde(default)]
    pub channel_role: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub banned: bool,
    #[serde(default)]
    pub shadow_banned: bool,
    #[serde(default)]
    pub notifications_muted: bool,
}

/// The answer to a channel query, and each element of a channels query (which has no `duration` per channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStateResponse {
    pub channel: ChannelResponse,
    #[serde(default)]
    pub members: Vec<ChannelMember>,
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub pinned_messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub threads: Vec<serde_json::Value>,
    #[serde(default)]
    pub read: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchers: Option<Vec<User>>,
    #[serde(default)]
    pub watcher_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<ChannelMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}
