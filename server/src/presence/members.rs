//! Changing a channel's members (`POST /channels/{type}/{id}` with `add_members` / `remove_members`, what the
//! SDKs' `addMembers` / `removeMembers` send): who may, what is refused, what the channel's watchers are told
//! (`member.added`, `member.removed`), and what follows for presence. Watchers that asked for members' presence
//! follow a new member, and stop following one who left, through the member index alone: each member added or
//! removed costs O(log n) however large the channel, and nothing is rescanned.

use chrono::{DateTime, Utc};
use presence_protocol::codes::event_type;
use presence_protocol::ids::{is_channel_id, is_channel_type, is_distinct_channel_id};
use presence_protocol::{Event, UpdateChannelRequest, UpdateChannelResponse};

use crate::error::Error;
use crate::model::{event_time, Caller, MemberRecord, Write};
use crate::presence::queries::channel_member;
use crate::presence::watch::caller_user;
use crate::presence::{access, limits, ConnId, Engine};

/// Fields of a channel update that concern what this server does not keep (message history, push): accepted and
/// without effect.
const IGNORED_FIELDS: &[&str] = &["hide_history", "hide_history_before", "skip_push"];

/// The role every member has: channel roles cannot be set (`channel_role` in an `add_members` object is ignored,
/// as at creation).
const MEMBER_ROLE: &str = "channel_member";

impl Engine {
    /// `POST /channels/{type}/{id}`: adds and removes members. A server token may change any channel's members, a
    /// user token those of a channel it is a member of. Refused as a whole when a user to add does not exist, when
    /// the channel is a distinct one (its id stands for its member set), or for anything else the body asks that
    /// is not a member change. Users already members (or not members, for removal) are passed over.
    pub fn update_members(
        &mut self,
        caller: &Caller,
        channel_type: &str,
        channel_id: &str,
        req: &UpdateChannelRequest,
        now: DateTime<Utc>,
    ) -> Result<UpdateChannelResponse, Error> {
        if !is_channel_type(channel_type) {
            return Err(Error::input(
                "channel type may only contain ASCII letters, digits, _ and -",
            ));
        }
        access::check_channel_type(channel_type)?;
        if !is_channel_id(channel_id) {
            return Err(Error::input(
                "channel id must be 1 to 64 ASCII letters, digits, !, _ and -",
            ));
        }
        check_only_member_changes(req)?;
        let (add, remove) =
            limits::member_changes(req.add_members.as_ref(), req.remove_members.as_ref())?;
        let cid = format!("{channel_type}:{channel_id}");
        let Some(channel) = self.channels.get(&cid) else {
            return Err(Error::not_found(format!("channel {cid} does not exist")));
        };
        access::check_update_members(caller, channel)?;
        if is_distinct_channel_id(&channel.id) {
            return Err(Error::input(format!(
                "channel {cid} is a distinct channel: its id stands for its member set, so its members cannot \
                 change (open the distinct channel of the new member set instead)"
            )));
        }
        let missing: Vec<&str> = add
            .iter()
            .map(String::as_str)
            .filter(|id| !self.users.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(Error::input(format!(
                "the following users are specified in add_members but don't exist: {}",
                missing.join(", ")
            )));
        }
        let mut added = Vec::new();
        for user_id in add {
            let member = MemberRecord {
                user_id,
                channel_role: MEMBER_ROLE.to_string(),
                created_at: now,
                updated_at: now,
            };
            if self.channels.add_member(&cid, member.clone()) {
                added.push(member);
            }
        }
        let removed: Vec<MemberRecord> = remove
            .iter()
            .filter_map(|user_id| self.channels.remove_member(&cid, user_id))
            .collect();
        if !added.is_empty() {
            self.writes
                .push(Write::AddMembers(cid.clone(), added.clone()));
        }
        if !removed.is_empty() {
            let ids = removed.iter().map(|m| m.user_id.clone()).collect();
            self.writes.push(Write::RemoveMembers(cid.clone(), ids));
        }
        for member in &added {
            self.member_event(&cid, member, event_type::MEMBER_ADDED, now);
        }
        for member in &removed {
            self.member_event(&cid, member, event_type::MEMBER_REMOVED, now);
            self.stop_watches_of_non_member(&cid, &member.user_id, now);
        }
        let state = self
            .channel_state(&cid, caller_user(caller), None, None)
            .ok_or_else(|| Error::internal("channel vanished"))?;
        Ok(UpdateChannelResponse {
            channel: state.channel,
            members: state.members,
            duration: String::new(),
        })
    }

    /// `member.added` / `member.removed` about `member` to every watcher of the channel (the member's own
    /// connections included): `member` and `user` carry the user as others see them.
    fn member_event(&mut self, cid: &str, member: &MemberRecord, kind: &str, now: DateTime<Utc>) {
        let (Some(channel), Some(user)) = (self.channels.get(cid), self.users.get(&member.user_id))
        else {
            return;
        };
        let user = user.rec.public_view(user.visible_online());
        let event = Event {
            kind: kind.to_string(),
            created_at: Some(event_time(now)),
            cid: Some(cid.to_string()),
            channel_id: Some(channel.id.clone()),
            channel_type: Some(channel.channel_type.clone()),
            member: Some(channel_member(member, user.clone())),
            user: Some(user),
            ..Event::default()
        };
        let to: Vec<ConnId> = self
            .channels
            .watchers(cid)
            .map(|(c, _)| c)
            .filter(|c| self.conns.contains(c))
            .cloned()
            .collect();
        self.deliver(&event, to);
    }

    /// A user removed from a channel that only members may read stops watching it, from every connection and
    /// from a watch lingering after one ended: the other watchers hear `user.watching.stop`, and the user's
    /// connections no longer follow the presence of its members.
    fn stop_watches_of_non_member(&mut self, cid: &str, user_id: &str, now: DateTime<Utc>) {
        let Some(channel) = self.channels.get(cid) else {
            return;
        };
        if access::may_read(&Caller::User(user_id.to_string()), channel) {
            return;
        }
        let conns: Vec<ConnId> = self
            .users
            .get(user_id)
            .map(|u| u.conns().to_vec())
            .unwrap_or_default();
        let mut watched = self.lingering.remove(user_id, cid);
        for conn in &conns {
            watched |= self.channels.unwatch(cid, conn);
        }
        if watched {
            self.watch_ended(cid, user_id, now);
        }
    }
}

/// Refuses a channel update asking for more than member changes: a message to post, new channel data, roles,
/// invites — none of which this server keeps.
fn check_only_member_changes(req: &UpdateChannelRequest) -> Result<(), Error> {
    if req.message.is_some() {
        return Err(Error::input(
            "message is not supported: this server keeps no messages; change members without one",
        ));
    }
    let mut unsupported: Vec<&str> = req
        .other
        .keys()
        .map(String::as_str)
        .filter(|k| !IGNORED_FIELDS.contains(k))
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    unsupported.sort_unstable();
    let named = match unsupported.as_slice() {
        [one] => format!("{one} is"),
        few @ [_, _, _] | few @ [_, _] => format!("{} are", few.join(", ")),
        [first, second, third, rest @ ..] => {
            format!("{first}, {second}, {third} and {} more are", rest.len())
        }
        [] => String::new(),
    };
    Err(Error::input(format!(
        "{named} not supported: a channel update here changes members only (add_members, remove_members)"
    )))
}
