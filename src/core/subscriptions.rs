//! Every presence subscription the app made, so that a new connection can make them all again: the server ties
//! subscriptions to a `connection_id` and forgets them when that connection ends.
//!
//! What is kept is what the server subscribed, not the calls that made it: the users a presence query returned
//! (the server follows exactly those) and the channels watched. A recovery then costs one request per kind and
//! chunk, whatever the number of calls the app made: [`Subscriptions::recovery`].

/// The most users one recovery `queryUsers` names: the server's `limit` ceiling for `GET /users` (only the users
/// an answer returns are followed, so a chunk must fit one page; `$in` itself takes up to 1,000).
pub const USERS_PER_QUERY: usize = 100;
/// The most channels one recovery `queryChannels` names: the server's `limit` ceiling for `POST /channels`.
pub const CHANNELS_PER_QUERY: usize = 30;

/// One recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// `GET /users` with `{"filter_conditions":{"id":{"$in":ids}},"presence":true,"limit":ids.len()}`.
    Users { ids: Vec<String> },
    /// `POST /channels` with `{"filter_conditions":{"cid":{"$in":cids}},"state":true,"watch":true,
    /// "presence":presence,"limit":cids.len()}`.
    Channels { cids: Vec<String>, presence: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    cid: String,
    presence: bool,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Sorted, without duplicates.
    users: Vec<String>,
    /// In the order first watched.
    channels: Vec<Watched>,
}

impl Subscriptions {
    /// Records a watched channel. Watching it again keeps one entry; once asked for, presence stays on until
    /// `stop_watching`.
    pub fn watch_channel(&mut self, channel_type: &str, id: &str, presence: bool) {
        let cid = cid(channel_type, id);
        match self.channels.iter_mut().find(|w| w.cid == cid) {
            Some(known) => known.presence |= presence,
            None => self.channels.push(Watched { cid, presence }),
        }
    }

    pub fn stop_watching(&mut self, channel_type: &str, id: &str) -> bool {
        let cid = cid(channel_type, id);
        let before = self.channels.len();
        self.channels.retain(|w| w.cid != cid);
        before != self.channels.len()
    }

    /// Records the users a presence query returned (the server now follows them on this connection).
    pub fn follow_users<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if let Err(at) = self.users.binary_search_by(|known| known.as_str().cmp(id)) {
                self.users.insert(at, id.to_string());
            }
        }
    }

    pub fn is_watching(&self, channel_type: &str, id: &str) -> bool {
        let cid = cid(channel_type, id);
        self.channels.iter().any(|w| w.cid == cid)
    }

    pub fn is_following(&self, id: &str) -> bool {
        self.users
            .binary_search_by(|known| known.as_str().cmp(id))
            .is_ok()
    }

    /// The requests that make every subscription again on a new connection: the followed users in chunks of
    /// [`USERS_PER_QUERY`], then the watched channels in chunks of [`CHANNELS_PER_QUERY`] (those watched with
    /// presence apart from the others, so that no channel gains or loses presence events by a reconnect).
    pub fn recovery(&self) -> Vec<Subscription> {
        let mut requests: Vec<Subscription> = self
            .users
            .chunks(USERS_PER_QUERY)
            .map(|ids| Subscription::Users { ids: ids.to_vec() })
            .collect();
        for presence in [true, false] {
            let cids: Vec<String> = self
                .channels
                .iter()
                .filter(|w| w.presence == presence)
                .map(|w| w.cid.clone())
                .collect();
            requests.extend(
                cids.chunks(CHANNELS_PER_QUERY)
                    .map(|cids| Subscription::Channels {
                        cids: cids.to_vec(),
                        presence,
                    }),
            );
        }
        requests
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.channels.is_empty()
    }

    pub fn clear(&mut self) {
        self.users.clear();
        self.channels.clear();
    }
}

fn cid(channel_type: &str, id: &str) -> String {
    [channel_type, ":", id].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_kept_once_and_presence_sticks() {
        let mut subs = Subscriptions::default();
        subs.watch_channel("messaging", "a", true);
        subs.watch_channel("messaging", "a", false);
        subs.watch_channel("messaging", "b", false);
        assert_eq!(
            subs.recovery(),
            [
                Subscription::Channels {
                    cids: vec!["messaging:a".into()],
                    presence: true
                },
                Subscription::Channels {
                    cids: vec!["messaging:b".into()],
                    presence: false
                },
            ]
        );
        assert!(subs.stop_watching("messaging", "a"));
        assert!(!subs.is_watching("messaging", "a"));
        assert!(subs.is_watching("messaging", "b"));
    }

    #[test]
    fn followed_users_are_kept_once_whatever_the_number_of_queries() {
        let mut subs = Subscriptions::default();
        for i in 0..500 {
            subs.follow_users([format!("u{i}").as_str(), "shared"]);
        }
        let requests = subs.recovery();
        let named: Vec<&String> = requests
            .iter()
            .flat_map(|r| match r {
                Subscription::Users { ids } => ids.iter(),
                Subscription::Channels { .. } => panic!("no channel was watched"),
            })
            .collect();
        assert_eq!(named.len(), 501, "every user once");
        assert!(subs.is_following("shared") && subs.is_following("u499"));
    }
}
