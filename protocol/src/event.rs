//! WebSocket event frames. One struct covers every event of the presence subset; `kind` names it and the
//! optional fields carry what that kind has (see `codes::event_type`).

use serde::{Deserialize, Serialize};

use crate::{ApiError, ChannelMember, User};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<User>,
    /// The member a `member.added` / `member.removed` event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<ChannelMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// The client's keep-alive frame: a JSON array holding one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckPing {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub client_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_first_frame_parses_with_me() {
        let raw = r#"{"type":"health.check","connection_id":"c-1","cid":"*","created_at":"2026-06-24T11:44:48.215772568Z",
            "me":{"id":"alice","online":true,"invisible":false,"mutes":[],"channel_mutes":[],"status":"busy"}}"#;
        let ev: Event = serde_json::from_str(raw).unwrap();
        assert_eq!(ev.kind, "health.check");
        assert_eq!(ev.connection_id.as_deref(), Some("c-1"));
        let me = ev.me.unwrap();
        assert_eq!(me.invisible, Some(false));
        assert_eq!(me.mutes.as_deref(), Some(&[][..]));
        assert_eq!(me.status(), Some("busy"));
    }
}
