//! `queryChannel`: get a channel or create it (the distinct channel of a member set when no id is given),
//! optionally watching it.

use chrono::{DateTime, Utc};
use presence_protocol::ids::{
    is_channel_id, is_channel_type, is_distinct_channel_id, DISTINCT_CHANNEL_PREFIX,
};
use presence_protocol::{ChannelQueryRequest, ChannelStateResponse, JsonMap};
use serde_json::Value;

use crate::error::Error;
use crate::model::{Caller, ChannelRecord, MemberRecord, Write};
use crate::presence::distinct::{distinct_channel_id, has_exactly, legacy_distinct_channel_id};
use crate::presence::watch::caller_user;
use crate::presence::{access, limits, Engine};

impl Engine {
    /// `POST /channels/{type}/{id}/query` (or without id: the distinct channel of `data.members`).
    pub fn query_channel(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        channel_type: &str,
        channel_id: Option<&str>,
        req: &ChannelQueryRequest,
        now: DateTime<Utc>,
    ) -> Result<ChannelStateResponse, Error> {
        if !is_channel_type(channel_type) {
            return Err(Error::input(
                "channel type may only contain ASCII letters, digits, _ and -",
            ));
        }
        access::check_channel_type(channel_type)?;
        let members = limits::member_ids(&req.data)?;
        let named_creator = named_creator(caller, &req.data)?;
        let data = access::custom_channel_data(&req.data)?;
        limits::check_channel_data(&data)?;
        limits::check_page("watchers", req.watchers)?;
        let (channel_id, distinct) = match channel_id {
            Some(id) if is_channel_id(id) => (id.to_string(), false),
            Some(_) => {
                return Err(Error::input(
                    "channel id must be 1 to 64 ASCII letters, digits, !, _ and -",
                ))
            }
            None if members.is_empty() => {
                return Err(Error::input("a channel without id needs data.members"))
            }
            None => (self.distinct_channel_id(channel_type, &members)?, true),
        };
        let cid = format!("{channel_type}:{channel_id}");
        match self.channels.get(&cid) {
            // Clients come back to a distinct channel by its id once they know it.
            Some(existing) => access::check_read(caller, existing)?,
            // Whoever could create a channel under a distinct id would own the conversation of the member set
            // that id stands for.
            None if !distinct && is_distinct_channel_id(&channel_id) => {
                return Err(Error::input(format!(
                    "channel ids starting with {DISTINCT_CHANNEL_PREFIX} are the server's: create a distinct \
                     channel by its data.members, without an id"
                )))
            }
            None => {
                let rec = ChannelRecord {
                    cid: cid.clone(),
                    channel_type: channel_type.to_string(),
                    id: channel_id,
                    data,
                    created_by: caller_user(caller).map(str::to_string).or(named_creator),
                    created_at: now,
                    updated_at: now,
                    members: members
                        .into_iter()
                        .map(|user_id| MemberRecord {
                            user_id,
                            channel_role: "channel_member".to_string(),
                            created_at: now,
                            updated_at: now,
                        })
                        .collect(),
                };
                self.create_channel(caller, rec)?;
            }
        }
        if req.watch {
            if let Some(conn) = self.subscribable_conn(caller, conn_id) {
                self.watch(&cid, &conn, req.presence, now);
            }
        }
        self.channel_state(&cid, caller_user(caller), req.members, req.watchers)
            .ok_or_else(|| Error::internal("channel vanished"))
    }

    /// The id of the distinct channel of `members` (sorted, without repeats) in `channel_type`: the channel of
    /// exactly that member set stored under the id distinct channels had before their ids were keyed, if there
    /// is one, else the keyed id. A channel under the keyed id holding other members is refused, never returned.
    fn distinct_channel_id(&self, channel_type: &str, members: &[String]) -> Result<String, Error> {
        let id = distinct_channel_id(&self.config.distinct_channel_key, members);
        match self.channels.get(&format!("{channel_type}:{id}")) {
            Some(channel) if has_exactly(channel, members) => return Ok(id),
            Some(channel) => {
                return Err(Error::input(format!(
                    "channel {} is not the distinct channel of these members",
                    channel.cid
                )))
            }
            None => {}
        }
        let legacy = legacy_distinct_channel_id(members);
        match self.channels.get(&format!("{channel_type}:{legacy}")) {
            Some(channel) if has_exactly(channel, members) => Ok(legacy),
            _ => Ok(id),
        }
    }

    /// Stores a new channel for `caller`: a user must be among its members and under the per-user channel cap,
    /// and the creator and every member must exist. A channel counts towards its creator's cap whoever created
    /// it (so the count read back from storage at start is the same), but only a user token is held to the cap:
    /// a backend naming the creator is never refused by it.
    fn create_channel(&mut self, caller: &Caller, rec: ChannelRecord) -> Result<(), Error> {
        access::check_create(caller, &rec)?;
        if let Some(user_id) = caller_user(caller) {
            self.channel_quota
                .check(user_id, self.config.max_channels_per_user)?;
        }
        if let Some(creator) = rec.created_by.as_deref() {
            if !self.users.contains(creator) {
                return Err(Error::input(format!(
                    "the user named in data.created_by does not exist: {creator}"
                )));
            }
        }
        let missing: Vec<&str> = rec
            .members
            .iter()
            .map(|m| m.user_id.as_str())
            .filter(|id| !self.users.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(Error::input(format!(
                "the following users are specified in channel.members but don't exist: {}",
                missing.join(", ")
            )));
        }
        self.channel_quota.count(rec.created_by.as_deref());
        self.writes.push(Write::SaveChannel(Box::new(rec.clone())));
        self.channels.insert(rec);
        Ok(())
    }
}

/// The creator a request's `data` names (`created_by: {id}` or `created_by_id`, as Stream's server SDKs send on
/// create), checked: a server token may name any user, a user token only itself (its channels' creator is always
/// the caller). Both fields may be given if they name the same user.
fn named_creator(caller: &Caller, data: &JsonMap) -> Result<Option<String>, Error> {
    let by_object = match data.get("created_by") {
        None => None,
        Some(Value::Object(user)) => match user.get("id") {
            Some(Value::String(id)) => Some(("data.created_by.id", id.as_str())),
            _ => {
                return Err(Error::input(
                    "data.created_by must be a user object with a string id",
                ))
            }
        },
        Some(_) => {
            return Err(Error::input(
                "data.created_by must be a user object ({\"id\": ...})",
            ))
        }
    };
    let by_id = match data.get("created_by_id") {
        None => None,
        Some(Value::String(id)) => Some(("data.created_by_id", id.as_str())),
        Some(_) => return Err(Error::input("data.created_by_id must be a user id")),
    };
    for (field, id) in by_object.iter().chain(by_id.iter()) {
        limits::check_user_id(field, id)?;
    }
    let named = match (by_object, by_id) {
        (Some((_, a)), Some((_, b))) if a != b => {
            return Err(Error::input(format!(
                "data.created_by names user {a} and data.created_by_id user {b}: name one creator"
            )))
        }
        (Some((field, id)), _) | (None, Some((field, id))) => Some((field, id)),
        (None, None) => None,
    };
    match (caller, named) {
        (Caller::User(me), Some((field, id))) if id != me => Err(Error::input(format!(
            "{field} names user {id}, but a channel created with a user token is created by that user ({me})"
        ))),
        (_, named) => Ok(named.map(|(_, id)| id.to_string())),
    }
}
