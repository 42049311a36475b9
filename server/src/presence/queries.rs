//! Reading: filter, sort and page users and channels — on a [`View`], so the engine is not held up by O(N)
//! work — and the state of a channel as a viewer sees it. A query may also subscribe the caller's connection
//! (followers, watchers); that, and the channel states with their live watchers, is a short step on the engine
//! for the at most 100 users or 30 channels returned.

use chrono::{DateTime, Utc};
use presence_protocol::user::{BUILT_IN_USER_FIELDS, RESERVED_USER_FIELDS};
use presence_protocol::{
    ChannelConfig, ChannelMember, ChannelResponse, ChannelStateResponse, JsonMap, Pagination,
    QueryChannelsRequest, QueryUsersPayload, SortParam, User,
};
use serde_json::Value;

use crate::error::Error;
use crate::model::{record_time, Caller, ChannelRecord, MemberRecord};
use crate::presence::filter::{self, Filter};
use crate::presence::pick::pick;
use crate::presence::users::UserEntry;
use crate::presence::view::{ChannelPage, Spent, View};
use crate::presence::watch::caller_user;
use crate::presence::{access, Engine};

/// Fields a user query may sort on whether or not any user has them: the user object's own fields (built-in and
/// server-owned), and `username`, which Stream documents for users.
fn user_sort_field(field: &str) -> bool {
    BUILT_IN_USER_FIELDS.contains(&field)
        || RESERVED_USER_FIELDS.contains(&field)
        || field == "username"
}

/// Fields a channel query may sort on whether or not any channel has them: those the query reads from every
/// channel, and those Stream documents for channel sorts.
const CHANNEL_SORT_FIELDS: &[&str] = &[
    "cid",
    "id",
    "type",
    "member_count",
    "members",
    "created_at",
    "updated_at",
    "created_by_id",
    "last_message_at",
    "last_updated",
    "unread_count",
    "has_unread",
    "pinned_at",
    "name",
    "image",
    "frozen",
    "disabled",
];

const USER_SORT_DEFAULT: &[(&str, i64)] = &[("created_at", -1), ("id", -1)];
const CHANNEL_SORT_DEFAULT: &[(&str, i64)] =
    &[("last_message_at", -1), ("updated_at", -1), ("cid", 1)];

fn default_sort(keys: &[(&str, i64)]) -> Vec<SortParam> {
    keys.iter()
        .map(|(field, direction)| SortParam {
            field: field.to_string(),
            direction: *direction,
        })
        .collect()
}

/// Leaves the first `k` items of `items` in `cmp` order, dropping the rest: a selection in linear time, then a
/// sort of `k` items, rather than a sort of them all (a page is at most 1,100 deep). `cmp` is a total order.
fn top_k<T>(items: &mut Vec<T>, k: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, &cmp);
        items.truncate(k);
    }
    items.sort_by(cmp);
}

/// How many candidates a query examines between two questions to its driver whether it must stop: often enough
/// that the most a capped filter costs per candidate adds little past the driver's deadline.
const CHECK_EVERY: usize = 8;

/// The refusal of a query that ran out of its time before it had looked at every candidate.
fn too_expensive(examined: usize, what: &str) -> Error {
    Error::input(format!(
        "query too expensive: stopped after examining {examined} {what} in the time one query may take; \
         narrow the filter (pin id or cid with $in, or use fewer conditions)"
    ))
}

fn page_bounds(
    limit: Option<u64>,
    offset: Option<u64>,
    default: u64,
    max: u64,
) -> Result<(usize, usize), Error> {
    let limit = limit.unwrap_or(default);
    if limit > max {
        return Err(Error::input(format!("limit must be at most {max}")));
    }
    let offset = offset.unwrap_or(0);
    if offset > 1000 {
        return Err(Error::input("offset must be at most 1000"));
    }
    Ok((limit as usize, offset as usize))
}

impl View {
    /// `GET /users` on this view: filter, sort and page users as the caller sees them, however long it takes.
    pub fn query_users(
        &self,
        caller: &Caller,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Error> {
        self.query_users_within(caller, payload, &|| false)
    }

    /// [`View::query_users`], stopped with an input error once `spent` says so.
    pub fn query_users_within(
        &self,
        caller: &Caller,
        payload: &QueryUsersPayload,
        spent: Spent<'_>,
    ) -> Result<Vec<User>, Error> {
        let filter = Filter::parse(&payload.filter_conditions, None)?;
        let known = |f: &str| user_sort_field(f) || self.users.carry(f);
        filter::check_sort(&payload.sort, Some(&known))?;
        let (limit, offset) = page_bounds(payload.limit, payload.offset, 30, 100)?;
        let viewer = caller_user(caller);
        let mut sort = payload.sort.clone();
        sort.extend(default_sort(if payload.sort.is_empty() {
            USER_SORT_DEFAULT
        } else {
            &[("id", 1)]
        }));
        // A filter that pins `id` (the usual presence query) only needs those users looked at.
        let candidates: Box<dyn Iterator<Item = &UserEntry>> = match filter.id_candidates() {
            Some(ids) => Box::new(ids.into_iter().filter_map(|id| self.users.get(id))),
            None => Box::new(self.users.iter()),
        };
        // Each user as the caller sees them, reduced to the fields the filter and the sort read.
        let read = filter::fields_read(&filter, &sort);
        let mut matched: Vec<(JsonMap, &UserEntry)> = Vec::new();
        for (examined, entry) in candidates.enumerate() {
            if examined % CHECK_EVERY == 0 && spent() {
                return Err(too_expensive(examined, "users"));
            }
            let Ok(map) = pick(&entry.view_for(viewer), &read) else {
                continue;
            };
            if filter.matches(&map) {
                matched.push((map, entry));
            }
        }
        top_k(&mut matched, offset + limit, |a, b| {
            filter::sort_order(&sort, &a.0, &b.0)
        });
        Ok(matched
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, entry)| entry.view_for(viewer))
            .collect())
    }

    /// `POST /channels` on this view: the page of the channels the caller may read selected, in order, however
    /// long it takes.
    pub fn select_channels(
        &self,
        caller: &Caller,
        req: &QueryChannelsRequest,
    ) -> Result<ChannelPage, Error> {
        self.select_channels_within(caller, req, &|| false)
    }

    /// [`View::select_channels`], stopped with an input error once `spent` says so.
    pub fn select_channels_within(
        &self,
        caller: &Caller,
        req: &QueryChannelsRequest,
        spent: Spent<'_>,
    ) -> Result<ChannelPage, Error> {
        let filter = Filter::parse(&req.filter_conditions, None)?;
        let known = |f: &str| CHANNEL_SORT_FIELDS.contains(&f) || self.channels.carry(f);
        filter::check_sort(&req.sort, Some(&known))?;
        let (limit, offset) = page_bounds(req.limit, req.offset, 10, 30)?;
        let member_limit = match req.member_limit {
            Some(n) if n > 100 => return Err(Error::input("member_limit must be at most 100")),
            n => n,
        };
        let mut sort = req.sort.clone();
        sort.extend(default_sort(CHANNEL_SORT_DEFAULT));
        // A filter that pins `cid` (a client recovering its channels) only needs those channels looked at.
        let candidates: Box<dyn Iterator<Item = &ChannelRecord>> = match filter.pinned("cid") {
            Some(cids) => Box::new(cids.into_iter().filter_map(|cid| self.channels.get(cid))),
            None => Box::new(self.channels.records()),
        };
        let mut matched: Vec<(JsonMap, String)> = Vec::new();
        for (examined, rec) in candidates.enumerate() {
            if examined % CHECK_EVERY == 0 && spent() {
                return Err(too_expensive(examined, "channels"));
            }
            if !access::may_read(caller, rec) {
                continue;
            }
            let view = channel_filter_view(rec);
            if filter.matches(&view) {
                matched.push((view, rec.cid.clone()));
            }
        }
        top_k(&mut matched, offset + limit, |a, b| {
            filter::sort_order(&sort, &a.0, &b.0)
        });
        let cids: Vec<String> = matched
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, cid)| cid)
            .collect();
        Ok(ChannelPage {
            cids,
            watch: req.watch,
            presence: req.presence,
            member_limit,
        })
    }
}

impl Engine {
    /// `GET /users`: filter, sort and page users; with `presence` the connection follows each user returned.
    /// (The hub runs the two halves apart: the query on a view, the subscription on the engine.)
    #[cfg(test)]
    pub fn query_users(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Error> {
        let users = self.view().query_users(caller, payload)?;
        if !payload.presence {
            return Ok(users);
        }
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        Ok(self
            .follow_user_ids(caller, conn_id, &ids)?
            .unwrap_or(users))
    }

    /// The caller's connection follows the presence of each of `ids`; the users as they are now, or None when
    /// the connection may not subscribe (nothing changed then). Refused, with nothing followed, when the
    /// connection would follow more users than allowed.
    pub fn follow_user_ids(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        ids: &[String],
    ) -> Result<Option<Vec<User>>, Error> {
        if !self.follow_ids(caller, conn_id, ids)? {
            return Ok(None);
        }
        let viewer = caller_user(caller);
        Ok(Some(
            ids.iter()
                .filter_map(|id| self.users.get(id).map(|entry| entry.view_for(viewer)))
                .collect(),
        ))
    }

    /// What [`Engine::follow_user_ids`] changes, without the users' views (a cluster node applying another
    /// node's entry answers nobody). Returns whether the connection may subscribe.
    pub fn follow_ids(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        ids: &[String],
    ) -> Result<bool, Error> {
        let Some(conn) = self.subscribable_conn(caller, conn_id) else {
            return Ok(false);
        };
        self.follows
            .check_room(&conn, ids, self.config.max_follows_per_connection)?;
        for id in ids {
            self.follows.follow(&conn, id);
        }
        Ok(true)
    }

    /// What [`Engine::channel_states`] changes (the page's channels watched, if it asks for it), without the
    /// channels' states.
    pub fn watch_page(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        page: &ChannelPage,
        now: DateTime<Utc>,
    ) {
        if page.watch {
            if let Some(conn) = self.subscribable_conn(caller, conn_id) {
                for cid in &page.cids {
                    self.watch(cid, &conn, page.presence, now);
                }
            }
        }
    }

    /// The channels of `page` as the caller sees them now, watched first if the page asks for it.
    pub fn channel_states(
        &mut self,
        caller: &Caller,
        conn_id: Option<&str>,
        page: &ChannelPage,
        now: DateTime<Utc>,
    ) -> Vec<ChannelStateResponse> {
        self.watch_page(caller, conn_id, page, now);
        let members = Pagination {
            limit: page.member_limit,
            offset: None,
        };
        page.cids
            .iter()
            .filter_map(|cid| self.channel_state(cid, caller_user(caller), Some(members), None))
            .map(|mut state| {
                state.duration = None;
                state
            })
            .collect()
    }

    /// A channel as `viewer` sees it: members and watchers paged, presence as the viewer may see it.
    pub(super) fn channel_state(
        &self,
        cid: &str,
        viewer: Option<&str>,
        members: Option<Pagination>,
        watchers: Option<Pagination>,
    ) -> Option<ChannelStateResponse> {
        let ch = self.channels.get(cid)?;
        let member_view = |m: &MemberRecord| -> Option<ChannelMember> {
            let user = self.users.get(&m.user_id)?.view_for(viewer);
            Some(channel_member(m, user))
        };
        let (m_limit, m_offset) = members
            .map(|p| (p.limit.unwrap_or(100).min(100), p.offset.unwrap_or(0)))
            .unwrap_or((100, 0));
        let member_list: Vec<ChannelMember> = ch
            .members
            .iter()
            .skip(m_offset as usize)
            .take(m_limit as usize)
            .filter_map(member_view)
            .collect();
        let membership = viewer.and_then(|v| ch.members.get(v)).and_then(member_view);
        let watching = self.watching_users(cid);
        let watcher_count = watching.len() as u64;
        let watcher_list = watchers.map(|p| {
            watching
                .iter()
                .skip(p.offset.unwrap_or(0) as usize)
                .take(p.limit.unwrap_or(100) as usize)
                .map(|u| u.view_for(viewer))
                .collect()
        });
        let created_by = ch
            .created_by
            .as_ref()
            .and_then(|id| self.users.get(id))
            .map(|u| u.view_for(viewer));
        Some(ChannelStateResponse {
            channel: ChannelResponse {
                id: ch.id.clone(),
                channel_type: ch.channel_type.clone(),
                cid: ch.cid.clone(),
                created_at: record_time(ch.created_at),
                updated_at: record_time(ch.updated_at),
                created_by,
                frozen: false,
                disabled: false,
                member_count: ch.members.len() as u64,
                config: ChannelConfig {
                    connect_events: true,
                    name: ch.channel_type.clone(),
                },
                own_capabilities: vec!["read-events".to_string(), "connect-events".to_string()],
                custom: ch.data.clone(),
            },
            members: member_list,
            messages: Vec::new(),
            pinned_messages: Vec::new(),
            threads: Vec::new(),
            read: Vec::new(),
            watchers: watcher_list,
            watcher_count,
            membership,
            duration: Some(String::new()),
        })
    }
}

/// A member as channel answers and member events carry them, with `user` as the reader sees them.
pub(super) fn channel_member(m: &MemberRecord, user: User) -> ChannelMember {
    ChannelMember {
        user_id: m.user_id.clone(),
        user,
        channel_role: m.channel_role.clone(),
        created_at: record_time(m.created_at),
        updated_at: record_time(m.updated_at),
        banned: false,
        shadow_banned: false,
        notifications_muted: false,
    }
}

/// What a channel looks like to a filter: its ids, members, counts, times and custom data.
fn channel_filter_view(rec: &ChannelRecord) -> JsonMap {
    let mut view = rec.data.clone();
    let members: Vec<Value> = rec
        .members
        .iter()
        .map(|m| Value::String(m.user_id.clone()))
        .collect();
    view.insert("cid".into(), rec.cid.clone().into());
    view.insert("id".into(), rec.id.clone().into());
    view.insert("type".into(), rec.channel_type.clone().into());
    view.insert("member_count".into(), (rec.members.len() as u64).into());
    view.insert("members".into(), Value::Array(members));
    view.insert("created_at".into(), record_time(rec.created_at).into());
    view.insert("updated_at".into(), record_time(rec.updated_at).into());
    if let Some(by) = &rec.created_by {
        view.insert("created_by_id".into(), by.clone().into());
    }
    view
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_keeps_exactly_the_first_k_of_a_full_sort() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 2, 7, 30, 31, 500] {
            let items: Vec<u64> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % 50
                })
                .collect();
            for k in [0usize, 1, 5, 30, 1000] {
                let mut sorted = items.clone();
                sorted.sort();
                sorted.truncate(k);
                let mut picked = items.clone();
                top_k(&mut picked, k, |a, b| a.cmp(b));
                assert_eq!(picked, sorted, "len {len}, k {k}");
            }
        }
    }
}
