//! Distinct channels, named by their member set: the id a set gets (a hash keyed with a secret of the server's, so
//! nobody can tell in advance which id a set gets, and claim it first), the id sets got before ids were keyed,
//! and whether a stored channel is the one of a set.

use std::collections::HashSet;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use presence_protocol::ids::DISTINCT_CHANNEL_PREFIX;
use sha2::Sha256;

use crate::model::ChannelRecord;

/// The key distinct channel ids are derived with, from the API secret: every process of a cluster shares the
/// secret, so they agree on each id, while nobody without it can compute one. Derived rather than the secret
/// itself, so that nothing this keys can be mistaken for something the secret signs (tokens, webhooks).
pub fn distinct_channel_key(api_secret: &str) -> Arc<[u8]> {
    let mut mac = keyed(api_secret.as_bytes());
    mac.update(b"presence-server distinct channel ids");
    Arc::from(mac.finalize().into_bytes().as_slice())
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// The id of the distinct channel of a member set: a keyed hash (HMAC-SHA256, 128 bits kept) of the sorted ids,
/// each preceded by its length so that no two sets read alike.
pub fn distinct_channel_id(key: &[u8], members: &[String]) -> String {
    let mut mac = keyed(key);
    for id in sorted_set(members) {
        mac.update(&(id.len() as u64).to_be_bytes());
        mac.update(id.as_bytes());
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DISTINCT_CHANNEL_PREFIX}{hex}")
}

/// The id distinct channels had before their ids were keyed (FNV-1a over the sorted ids): such a channel is still
/// found when exactly its member set asks again.
pub fn legacy_distinct_channel_id(members: &[String]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted_set(members).join("\u{0}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{DISTINCT_CHANNEL_PREFIX}{hash:016x}")
}

fn sorted_set(members: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Whether the channel's members are exactly `members` (in any order).
pub fn has_exactly(channel: &ChannelRecord, members: &[String]) -> bool {
    let stored: HashSet<&str> = channel.members.iter().map(|m| m.user_id.as_str()).collect();
    let asked: HashSet<&str> = members.iter().map(String::as_str).collect();
    stored == asked
}

#[cfg(test)]
mod tests {
    use presence_protocol::ids::is_channel_id;

    use super::*;

    fn set(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_member_set_gets_one_well_formed_id_per_key() {
        let (a, b) = (
            distinct_channel_key("secret a"),
            distinct_channel_key("secret b"),
        );
        let id = distinct_channel_id(&a, &set(&["alice", "bob"]));
        assert!(is_channel_id(&id), "{id}");
        assert_eq!(id, distinct_channel_id(&a, &set(&["bob", "alice", "bob"])));
        assert_ne!(id, distinct_channel_id(&b, &set(&["alice", "bob"])));
        assert_ne!(id, legacy_distinct_channel_id(&set(&["alice", "bob"])));
        // Ids are framed by their length: no other split of the same bytes gives the same id.
        assert_ne!(
            distinct_channel_id(&a, &set(&["ab", "c"])),
            distinct_channel_id(&a, &set(&["a", "bc"]))
        );
    }
}
