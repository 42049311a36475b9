//! Id rules both sides apply before a request or a channel exists: which user ids, channel types and channel ids
//! are well-formed.
//!
//! User ids are 1 to 255 characters (Stream's limit) without control characters. Channel ids are ASCII letters,
//! digits, `-`, `_` and `!`, 1 to 64 characters; a type is ASCII letters, digits, `-` and `_`. Neither may contain
//! `:`, which separates them in a cid (`type:id`). Channel ids starting with [`DISTINCT_CHANNEL_PREFIX`] are the
//! server's own. Which types a server serves is its own decision ([`CHANNEL_TYPES`] are this project's).

/// The longest channel id a peer accepts.
pub const MAX_CHANNEL_ID_LEN: usize = 64;

/// The longest user id a peer accepts, in characters.
pub const MAX_USER_ID_LEN: usize = 255;

/// How the id of a distinct channel (one named by its member set, created without an id) begins. The server
/// derives the rest; a client may read or watch such a channel by its id but never create one under it.
pub const DISTINCT_CHANNEL_PREFIX: &str = "!members-";

/// The channel types this project serves.
pub const CHANNEL_TYPES: &[&str] = &["messaging", "team", "livestream", "commerce", "gaming"];

/// Whether `id` is a well-formed channel id.
pub fn is_channel_id(id: &str) -> bool {
    id.len() <= MAX_CHANNEL_ID_LEN && is_name(id, true)
}

/// Whether `id` is a well-formed user id: 1 to 255 characters, none of them a control character (storage
/// refuses a NUL, and the others only make ids that read alike differ).
pub fn is_user_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_USER_ID_LEN && !id.chars().any(char::is_control)
}

/// Whether `id` names a distinct channel, which only the server creates.
pub fn is_distinct_channel_id(id: &str) -> bool {
    id.starts_with(DISTINCT_CHANNEL_PREFIX)
}

/// Whether `channel_type` is a well-formed channel type name (known or not).
pub fn is_channel_type(channel_type: &str) -> bool {
    is_name(channel_type, false)
}

/// Non-empty, ASCII letters, digits, `_` and `-`, and `!` when `allow_bang`.
fn is_name(value: &str, allow_bang: bool) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (allow_bang && b == b'!')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_ascii_names_of_1_to_64_characters() {
        for id in ["general", "a", "room-1_b!", &"x".repeat(64)] {
            assert!(is_channel_id(id), "{id}");
        }
        for id in [
            "",
            "a:b",
            "a b",
            "café",
            "ünï",
            "a/b",
            "a.b",
            &"x".repeat(65),
        ] {
            assert!(!is_channel_id(id), "{id}");
        }
    }

    #[test]
    fn user_ids_are_1_to_255_characters_without_control_characters() {
        for id in ["a", "alice@example.com", "Zoë", &"é".repeat(255), "a b"] {
            assert!(is_user_id(id), "{id}");
        }
        for id in ["", &"x".repeat(256), "a\u{0}b", "a\nb", "\u{7f}"] {
            assert!(!is_user_id(id), "{id:?}");
        }
    }

    #[test]
    fn distinct_channel_ids_are_recognised_by_their_prefix() {
        assert!(is_distinct_channel_id("!members-0123abcd"));
        assert!(!is_distinct_channel_id("members-0123"));
        assert!(!is_distinct_channel_id("room!members-"));
    }

    #[test]
    fn channel_types_have_no_bang_or_colon() {
        assert!(CHANNEL_TYPES.iter().all(|t| is_channel_type(t)));
        assert!(is_channel_type("custom_type-2"));
        for channel_type in ["", "a!", "a:b", "tëam"] {
            assert!(!is_channel_type(channel_type), "{channel_type}");
        }
    }
}
