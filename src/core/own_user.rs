//! The connected user as a reconnect sends it back. The first handshake carries what the app passed to
//! `connectUser`; every later one carries the user as last known from the server (its `me`, the user's own
//! `user.updated` / `user.presence.changed` events, the answers of the user's own upserts and partial updates),
//! without the fields that either belong to the server or may have been changed elsewhere while the socket was
//! down. The server applies `user_details` as a partial update, so a field left out keeps the server's value:
//! a reconnect can no longer make an invisible user visible, or put back a status set elsewhere.

use presence_protocol::user::RESERVED_USER_FIELDS;

/// Fields a reconnect never sends back, besides the protocol's reserved fields (written only by the server, and
/// ignored on connect anyway).
const NOT_RESENT: &[&str] = &[
    // Also the server's, and not written through connect.
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
    !RESERVED_USER_FIELDS.contains(&field) && !NOT_RESENT.contains(&field)
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
