//! A read-only copy of users and channels as of some moment, O(1) to take (the maps are persistent): queries
//! filter, sort and serialize on it without holding up the engine.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::AppSettings;
use crate::presence::channels::Channels;
use crate::presence::types::ConnId;
use crate::presence::users::Users;

#[derive(Clone, Default)]
pub struct View {
    pub(super) users: Users,
    pub(super) channels: Channels,
    open_connections: usize,
    follows: usize,
    app: AppSettings,
    webhook_url: Option<Arc<str>>,
}

impl View {
    pub(super) fn new(
        users: Users,
        channels: Channels,
        open_connections: usize,
        follows: usize,
        app: AppSettings,
        webhook_url: Option<Arc<str>>,
    ) -> View {
        View {
            users,
            channels,
            open_connections,
            follows,
            app,
            webhook_url,
        }
    }

    /// The app's settings when the view was taken.
    pub fn app(&self) -> &AppSettings {
        &self.app
    }

    /// Where webhook events went when the view was taken.
    pub fn webhook_url(&self) -> Option<Arc<str>> {
        self.webhook_url.clone()
    }

    /// Open connections when the view was taken.
    pub fn open_connections(&self) -> usize {
        self.open_connections
    }

    /// Presence subscriptions ((connection, followed user) pairs) when the view was taken.
    pub fn follows(&self) -> usize {
        self.follows
    }

    /// Whether a `queryUsers` filter pins `id` (the usual presence query): it then looks at those users only, so
    /// it is cheap whatever the number of users.
    pub fn pins_user_ids(filter_conditions: &presence_protocol::JsonMap) -> bool {
        crate::presence::filter::Filter::parse(filter_conditions, None)
            .is_ok_and(|f| f.id_candidates().is_some())
    }

    /// Whether a `queryChannels` filter pins `cid` (what a client sends to recover its channels after a
    /// reconnect): it then looks at those channels only, so it is cheap whatever the number of channels.
    pub fn pins_channel_cids(filter_conditions: &presence_protocol::JsonMap) -> bool {
        crate::presence::filter::Filter::parse(filter_conditions, None)
            .is_ok_and(|f| f.pinned("cid").is_some())
    }

    /// The user's open connections when the view was taken, oldest first.
    pub fn connections_of(&self, user_id: &str) -> Vec<ConnId> {
        self.users
            .get(user_id)
            .map(|u| u.conns().to_vec())
            .unwrap_or_default()
    }

    /// Users peers saw online when the view was taken.
    pub fn online_users(&self) -> usize {
        self.users.online()
    }
}

/// Whether a query must stop before looking at its next candidates: the driver answers from its clock (the query
/// ran out of time) and from the client (it hung up); the engine has neither, so it only asks, every few candidates.
pub type Spent<'a> = &'a dyn Fn() -> bool;

/// The channels a `queryChannels` selected on a view, and what the caller asked to do with them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelPage {
    pub cids: Vec<String>,
    pub watch: bool,
    pub presence: bool,
    pub member_limit: Option<u64>,
}
