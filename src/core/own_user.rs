//! The connected user as a reconnect sends it back. The first handshake carries what the app passed to
//! `connectUser`; every later one carries the user as last known from the server (its `me`, the user's own
//! `user.updated` / `user.presence.changed` events, the answers of the user's own upserts and partial updates),
//! without the fields that either belong to the server or may have been changed elsewhere while the socket was
//! down. The server applies `user_details` as a partial update, so a field left out keeps the server's value:
//! a reconnect can no longer make an invisible user visible, or put back a status set elsewhere.

/// Fields a reconnect never sends back.
const NOT_RESENT: &[&str] = &[
    // Written only by the server (protocol §7.2): ignored on connect anyway.
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
    "total_unread_count_by_team",
    "role",
    "roles",
    "teams",
    // The presence choices, which other tabs and devices change: the server's value stands.
    "invisible",
    "status",
    "privacy_settings",
    "push_preferences",
];

/// Whether a reconnect's `user_details` carries `field` of the last known user.
pub fn resent_on_reconnect(field: &str) -> bool {
    !NOT_RESENT.contains(&field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_resent_but_never_presence_choices_or_server_fields() {
        for field in ["id", "name", "image", "language", "color"] {
            assert!(resent_on_reconnect(field), "{field}");
        }
        for field in [
            "invisible",
            "status",
            "online",
            "last_active",
            "created_at",
            "role",
        ] {
            assert!(!resent_on_reconnect(field), "{field}");
        }
    }
}
