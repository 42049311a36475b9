//! The user object as it travels: public fields, the own-user-only fields, and flat custom fields.

use serde::{Deserialize, Serialize};

use crate::JsonMap;

/// Field names a client may not write through upsert or partial update.
pub const RESERVED_USER_FIELDS: &[&str] = &[
    "online",
    "last_active",
    "created_at",
    "updated_at",
    "deactivated_at",
    "deleted_at",
    "banned",
    "shadow_banned",
    "revoke_tokens_issued_before",
    "blocked_user_ids",
    "devices",
    "mutes",
    "channel_mutes",
    "unread_count",
    "total_unread_count",
    "unread_channels",
    "unread_threads",
    "avg_response_time",
];

/// Names with a fixed meaning that are never stored as custom fields.
pub const BUILT_IN_USER_FIELDS: &[&str] = &[
    "id",
    "name",
    "image",
    "role",
    "language",
    "teams",
    "invisible",
    "privacy_settings",
];

/// A user as the server sends it. Own-user-only fields (`invisible`, `mutes`, ...) are present only on the
/// connected user's own object (`me`, and events about themselves sent to their own connections).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub banned: bool,
    #[serde(default)]
    pub blocked_user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invisible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutes: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_mutes: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_unread_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_channels: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_threads: Option<u64>,
    /// Custom fields (`status` among them), flat beside the built-in ones.
    #[serde(flatten)]
    pub custom: JsonMap,
}

impl User {
    /// The free-text status message, a custom field by convention.
    pub fn status(&self) -> Option<&str> {
        self.custom.get("status").and_then(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_fields_stay_flat_both_ways() {
        let raw = r#"{"id":"alice","name":"Alice","online":true,"status":"busy","color":"red","teams":[]}"#;
        let user: User = serde_json::from_str(raw).unwrap();
        assert_eq!(user.status(), Some("busy"));
        assert_eq!(user.custom.get("color").unwrap(), "red");
        let back = serde_json::to_value(&user).unwrap();
        assert_eq!(back["status"], "busy");
        assert_eq!(back["online"], true);
        assert!(back.get("custom").is_none());
        assert!(
            back.get("invisible").is_none(),
            "own-only fields are omitted unless set"
        );
    }
}
