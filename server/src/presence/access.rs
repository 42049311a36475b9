//! Who may do what with channels (protocol section 10, Stream's default permissions for this subset): which
//! channel types exist, who may read a channel (query it, get it, watch it, stop watching it, see it in
//! `queryChannels`), who may create one, who may change its members, and which `data` fields a request may not set
//! because the server owns them.
//! Every channel path asks here; nothing else decides.

use presence_protocol::ids::CHANNEL_TYPES;
use presence_protocol::JsonMap;

use crate::error::Error;
use crate::model::{Caller, ChannelRecord};

/// The one channel type any user may read and watch; every other type is readable by its members only.
const OPEN_TYPE: &str = "livestream";

/// Channel fields the server sets: a request's `data` naming one is refused (it would shadow the server's value
/// in every answer).
const SERVER_OWNED_FIELDS: &[&str] = &[
    "cid",
    "id",
    "type",
    "config",
    "created_at",
    "updated_at",
    "deleted_at",
    "member_count",
    "own_capabilities",
    "frozen",
    "disabled",
    "watcher_count",
    "watchers",
];

/// `data` fields that are inputs to creation, not custom data: the member list, and the creator
/// (`created_by: {id}` / `created_by_id`, checked where the channel is created).
const INPUT_FIELDS: &[&str] = &["members", "created_by", "created_by_id"];

/// A channel type this server serves.
pub fn check_channel_type(channel_type: &str) -> Result<(), Error> {
    if CHANNEL_TYPES.contains(&channel_type) {
        return Ok(());
    }
    Err(Error::input(format!(
        "channel type {channel_type} does not exist (the types are {})",
        CHANNEL_TYPES.join(", ")
    )))
}

/// Whether the caller may read the channel: server tokens always, users when they are members or the type is
/// open to everyone.
pub fn may_read(caller: &Caller, channel: &ChannelRecord) -> bool {
    match caller {
        Caller::Server => true,
        Caller::User(id) => channel.channel_type == OPEN_TYPE || is_member(channel, id),
    }
}

fn is_member(channel: &ChannelRecord, user_id: &str) -> bool {
    channel.members.contains(user_id)
}

/// [`may_read`] as a refusal naming the channel (403, code 17).
pub fn check_read(caller: &Caller, channel: &ChannelRecord) -> Result<(), Error> {
    if may_read(caller, channel) {
        return Ok(());
    }
    let who = match caller {
        Caller::User(id) => id.as_str(),
        Caller::Server => "",
    };
    Err(Error::not_allowed(format!(
        "user {who} is not allowed to read channel {}: only its members may",
        channel.cid
    )))
}

/// A user token may create only a channel it is a member of (403, code 17); server tokens create any.
pub fn check_create(caller: &Caller, channel: &ChannelRecord) -> Result<(), Error> {
    match caller {
        Caller::User(id) if !is_member(channel, id) => Err(Error::not_allowed(format!(
            "user {id} may not create channel {}: the creator must be one of its members",
            channel.cid
        ))),
        _ => Ok(()),
    }
}

/// Who may add and remove a channel's members (403, code 17 otherwise): server tokens, and users who are members
/// of it — Stream's default grant of `update-channel-members` to channel members. Reading a channel is not
/// enough: on a `livestream` channel, which anyone may read and watch, a user who is not a member may not join or
/// change its members either.
pub fn check_update_members(caller: &Caller, channel: &ChannelRecord) -> Result<(), Error> {
    match caller {
        Caller::User(id) if !is_member(channel, id) => Err(Error::not_allowed(format!(
            "user {id} may not change the members of channel {}: only its members may",
            channel.cid
        ))),
        _ => Ok(()),
    }
}

/// Refuses `data` naming a server-owned field (400, code 4); returns the custom data to store: `data` without the
/// creation inputs.
pub fn custom_channel_data(data: &JsonMap) -> Result<JsonMap, Error> {
    if let Some(field) = data
        .keys()
        .find(|k| SERVER_OWNED_FIELDS.contains(&k.as_str()))
    {
        return Err(Error::input(format!(
            "data.{field} is a reserved field: the server sets it"
        )));
    }
    Ok(data
        .iter()
        .filter(|(k, _)| !INPUT_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}
