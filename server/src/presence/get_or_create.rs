//! `queryChannel`: get a channel or create it (the distinct channel of a member set when no id is given),
//! optionally watching it.

use chrono::{DateTime, Utc};
use presence_protocol::ids::{is_channel_id, is_channel_type};
use presence_protocol::{ChannelQueryRequest, ChannelStateResponse};

use crate::error::Error;
use crate::model::{Caller, ChannelRecord, MemberRecord, Write};
use crate::presence::watch::caller_user;
use crate::presence::{access, limits, Engine};

/// A stable id for the distinct channel of a member set (FNV-1a over the sorted ids).
fn distinct_channel_id(members: &[String]) -> String {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted.join("\u{0}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("!members-{hash:016x}")
}

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
        const OP: &str = "GetOrCreateChannel";
        let fail = |f: Error| f.in_operation(OP);
        if !is_channel_type(channel_type) {
            return Err(fail(Error::input(
                "channel type may only contain ASCII letters, digits, _ and -",
            )));
        }
        access::check_channel_type(channel_type).map_err(fail)?;
        let members = limits::member_ids(&req.data).map_err(fail)?;
        if let Some(creator) = req.data.get("created_by_id") {
            let id = creator
                .as_str()
                .ok_or_else(|| fail(Error::input("data.created_by_id must be a user id")))?;
            limits::check_user_id("data.created_by_id", id).map_err(fail)?;
        }
        let data = access::custom_channel_data(&req.data).map_err(fail)?;
        limits::check_channel_data(&data).map_err(fail)?;
        limits::check_page("watchers", req.watchers).map_err(fail)?;
        let channel_id = match channel_id {
            Some(id) if is_channel_id(id) => id.to_string(),
            Some(_) => {
                return Err(fail(Error::input(
                    "channel id must be 1 to 64 ASCII letters, digits, !, _ and -",
                )))
            }
            None if members.is_empty() => {
                return Err(fail(Error::input(
                    "a channel without id needs data.members",
                )))
            }
            None => distinct_channel_id(&members),
        };
        let cid = format!("{channel_type}:{channel_id}");
        match self.channels.get(&cid) {
            Some(existing) => access::check_read(caller, existing).map_err(fail)?,
            None => {
                let rec = ChannelRecord {
                    cid: cid.clone(),
                    channel_type: channel_type.to_string(),
                    id: channel_id,
                    data,
                    created_by: caller_user(caller).map(str::to_string),
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
                self.create_channel(caller, rec).map_err(fail)?;
            }
        }
        if req.watch {
            if let Some(conn) = self.subscribable_conn(caller, conn_id) {
                self.watch(&cid, &conn, req.presence, now);
            }
        }
        self.channel_state(&cid, caller_user(caller), req.members, req.watchers)
            .ok_or_else(|| fail(Error::internal("channel vanished")))
    }

    /// Stores a new channel for `caller`: a user must be among its members and under the per-user channel cap,
    /// and every member must exist.
    fn create_channel(&mut self, caller: &Caller, rec: ChannelRecord) -> Result<(), Error> {
        access::check_create(caller, &rec)?;
        if let Some(user_id) = caller_user(caller) {
            self.channel_quota
                .check(user_id, self.config.max_channels_per_user)?;
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
