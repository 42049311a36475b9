//! Member changes on the engine: who hears of them, what presence follows from them, who may make them, and what
//! is refused (changing nothing).

use presence_protocol::codes::event_type::{MEMBER_ADDED, MEMBER_REMOVED};
use presence_protocol::UpdateChannelRequest;

use super::*;
use crate::model::{MemberRecord, Members};

impl Test {
    fn update(
        &mut self,
        caller: &Caller,
        id: &str,
        body: Value,
    ) -> Result<Value, crate::error::Error> {
        self.update_in("messaging", caller, id, body)
    }

    fn update_in(
        &mut self,
        channel_type: &str,
        caller: &Caller,
        id: &str,
        body: Value,
    ) -> Result<Value, crate::error::Error> {
        let req: UpdateChannelRequest = serde_json::from_value(body).unwrap();
        let answer = self
            .engine
            .update_members(caller, channel_type, id, &req, at(100));
        self.pump();
        answer.map(|a| serde_json::to_value(a).unwrap())
    }

    fn member_ids(&mut self, id: &str) -> Vec<String> {
        let state = self
            .engine
            .channel_state(&format!("messaging:{id}"), None, None, None)
            .unwrap();
        state.members.into_iter().map(|m| m.user_id).collect()
    }
}

fn user(id: &str) -> Caller {
    Caller::User(id.to_string())
}

#[test]
fn a_member_added_is_followed_by_presence_watchers_and_one_removed_is_not() {
    let mut t = Test::new(false);
    t.channel("c1", &["alice", "bob"]);
    let a1 = t.connect("a1", "alice", at(0));
    t.watch(&a1, "alice", "c1", true, at(1));
    t.take(&a1);

    let answer = t
        .update(&Caller::Server, "c1", json!({ "add_members": ["carol"] }))
        .unwrap();
    assert_eq!(answer["channel"]["member_count"], 3);
    assert_eq!(t.member_ids("c1"), ["alice", "bob", "carol"]);
    let added = t.taken(&a1, MEMBER_ADDED);
    assert_eq!(added.len(), 1, "{added:?}");
    let ev = &added[0];
    assert_eq!(ev["cid"], "messaging:c1");
    assert_eq!(
        (&ev["channel_type"], &ev["channel_id"]),
        (&json!("messaging"), &json!("c1"))
    );
    assert_eq!(ev["member"]["user_id"], "carol");
    assert_eq!(ev["member"]["user"]["id"], "carol");
    assert_eq!(ev["member"]["user"]["online"], false);
    assert_eq!(ev["member"]["channel_role"], "channel_member");
    assert_eq!(ev["user"]["id"], "carol");

    let c1 = t.connect("c1", "carol", at(200));
    assert_eq!(t.presence_flips(&a1, "carol"), [true]);
    t.take(&c1);

    t.update(
        &Caller::Server,
        "c1",
        json!({ "remove_members": ["carol"] }),
    )
    .unwrap();
    let removed = t.taken(&a1, MEMBER_REMOVED);
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["user"]["id"], "carol");
    assert_eq!(removed[0]["member"]["user_id"], "carol");
    assert_eq!(t.member_ids("c1"), ["alice", "bob"]);
    t.disconnect(&c1, Ending::Explicit, at(300));
    assert_eq!(t.presence_flips(&a1, "carol"), Vec::<bool>::new());

    // bob, a member all along, is still followed.
    t.connect("b1", "bob", at(400));
    assert_eq!(t.presence_flips(&a1, "bob"), [true]);
}

#[test]
fn changes_are_written_member_by_member_and_repeats_change_nothing() {
    let mut t = Test::new(false);
    t.channel("c1", &["alice"]);
    t.writes.clear();
    t.update(
        &Caller::Server,
        "c1",
        json!({ "add_members": ["bob", { "user_id": "carol", "channel_role": "channel_moderator" }, "alice"] }),
    )
    .unwrap();
    let added: Vec<(String, Vec<String>)> = t
        .writes
        .drain(..)
        .map(|w| match w {
            Write::AddMembers(cid, members) => {
                (cid, members.into_iter().map(|m| m.user_id).collect())
            }
            other => panic!("unexpected write {other:?}"),
        })
        .collect();
    assert_eq!(
        added,
        [("messaging:c1".to_string(), strs(&["bob", "carol"]))]
    );

    // Adding members again and removing users who are not members: nothing to write, nobody to tell.
    let a1 = t.connect("a1", "alice", at(0));
    t.watch(&a1, "alice", "c1", false, at(1));
    t.take(&a1);
    t.writes.clear();
    t.update(
        &Caller::Server,
        "c1",
        json!({ "add_members": ["bob"], "remove_members": ["dave"] }),
    )
    .unwrap();
    assert!(t.writes.is_empty(), "{:?}", t.writes);
    assert!(t.take(&a1).is_empty());

    t.update(
        &Caller::Server,
        "c1",
        json!({ "remove_members": ["bob", "carol"] }),
    )
    .unwrap();
    assert_eq!(
        t.writes,
        [Write::RemoveMembers(
            "messaging:c1".into(),
            strs(&["bob", "carol"])
        )]
    );
    assert_eq!(t.taken(&a1, MEMBER_REMOVED).len(), 2);
}

#[test]
fn members_and_server_tokens_change_members_and_nobody_else_does() {
    let mut t = Test::new(false);
    t.channel("c1", &["alice", "bob"]);
    t.update(&user("bob"), "c1", json!({ "add_members": ["carol"] }))
        .unwrap();
    let refused = t
        .update(&user("dave"), "c1", json!({ "add_members": ["dave"] }))
        .unwrap_err();
    assert_eq!(refused.code(), 17, "{refused}");
    // A member may remove others, and leave.
    t.update(
        &user("carol"),
        "c1",
        json!({ "remove_members": ["bob", "carol"] }),
    )
    .unwrap();
    assert_eq!(t.member_ids("c1"), ["alice"]);

    // Reading a livestream channel is open to everyone; changing its members is not.
    let req: ChannelQueryRequest =
        serde_json::from_value(json!({ "data": { "members": ["alice"] } })).unwrap();
    t.engine
        .query_channel(&Caller::Server, None, "livestream", Some("l1"), &req, at(0))
        .unwrap();
    let refused = t
        .update_in(
            "livestream",
            &user("bob"),
            "l1",
            json!({ "add_members": ["bob"] }),
        )
        .unwrap_err();
    assert_eq!(refused.code(), 17, "{refused}");
    t.update_in(
        "livestream",
        &user("alice"),
        "l1",
        json!({ "add_members": ["bob"] }),
    )
    .unwrap();
}

#[test]
fn refused_updates_change_nothing_and_say_why() {
    let mut t = Test::new(false);
    t.channel("c1", &["alice"]);
    let a1 = t.connect("a1", "alice", at(0));
    t.watch(&a1, "alice", "c1", true, at(1));
    let req: ChannelQueryRequest =
        serde_json::from_value(json!({ "data": { "members": ["alice", "bob"] } })).unwrap();
    let distinct = t
        .engine
        .query_channel(&Caller::Server, None, "messaging", None, &req, at(0))
        .unwrap()
        .channel
        .id;
    t.pump();
    t.take(&a1);
    t.writes.clear();
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let cases = [
        (
            "c1",
            json!({ "add_members": ["carol", "nobody", "ghost"] }),
            4,
            "don't exist: nobody, ghost",
        ),
        (
            "c1",
            json!({ "add_members": many }),
            4,
            "over the limit of 100",
        ),
        (
            "c1",
            json!({ "add_members": many[..60], "remove_members": many[60..] }),
            4,
            "101 users",
        ),
        (
            "c1",
            json!({ "add_members": "carol" }),
            4,
            "add_members must be an array",
        ),
        (
            "c1",
            json!({ "add_members": [7] }),
            4,
            "user ids or {user_id} objects",
        ),
        (
            "c1",
            json!({ "add_members": [""] }),
            4,
            "1 to 255 characters",
        ),
        (
            "c1",
            json!({ "remove_members": [{ "id": "x" }] }),
            4,
            "need a user_id",
        ),
        ("c1", json!({}), 4, "at least one user"),
        ("c1", json!({ "add_members": [] }), 4, "at least one user"),
        (
            "c1",
            json!({ "add_members": ["carol"], "remove_members": ["carol"] }),
            4,
            "both",
        ),
        (
            "c1",
            json!({ "add_members": ["carol"], "data": { "x": 1 } }),
            4,
            "data is not supported",
        ),
        (
            "c1",
            json!({ "add_members": ["carol"], "message": { "text": "hi" } }),
            4,
            "message is not supported",
        ),
        (
            "none",
            json!({ "add_members": ["carol"] }),
            16,
            "does not exist",
        ),
        (
            "bad:id",
            json!({ "add_members": ["carol"] }),
            4,
            "channel id",
        ),
        (
            &distinct,
            json!({ "add_members": ["carol"] }),
            4,
            "distinct channel",
        ),
    ];
    for (id, body, code, says) in cases {
        let e = t.update(&Caller::Server, id, body.clone()).unwrap_err();
        assert_eq!(e.code(), code, "{body}: {e}");
        assert!(e.message().contains(says), "{body}: {e}");
    }
    let e = t
        .update_in(
            "chat",
            &Caller::Server,
            "c1",
            json!({ "add_members": ["carol"] }),
        )
        .unwrap_err();
    assert_eq!(e.code(), 4, "{e}");
    assert!(t.writes.is_empty(), "{:?}", t.writes);
    assert!(t.take(&a1).is_empty());
    assert_eq!(t.member_ids("c1"), ["alice"]);
    // What the SDKs send besides: `message: null` (Python) and history options.
    t.update(
        &Caller::Server,
        "c1",
        json!({ "add_members": ["carol"], "message": null, "hide_history": true }),
    )
    .unwrap();
    assert_eq!(t.member_ids("c1"), ["alice", "carol"]);
}

#[test]
fn a_member_removed_from_a_members_only_channel_stops_watching_it() {
    let mut t = Test::new(false);
    t.channel("c1", &["alice", "bob"]);
    let a1 = t.connect("a1", "alice", at(0));
    let b1 = t.connect("b1", "bob", at(0));
    t.watch(&a1, "alice", "c1", true, at(1));
    t.watch(&b1, "bob", "c1", true, at(1));
    t.take(&a1);
    t.take(&b1);
    t.update(&Caller::Server, "c1", json!({ "remove_members": ["bob"] }))
        .unwrap();
    // bob's own connection hears that he was removed, then watches no more.
    let to_bob: Vec<Value> = t.take(&b1);
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert_eq!(to_bob[0]["type"], MEMBER_REMOVED);
    let to_alice: Vec<Value> = t.take(&a1);
    let kinds: Vec<&Value> = to_alice.iter().map(|e| &e["type"]).collect();
    assert_eq!(kinds, [MEMBER_REMOVED, USER_WATCHING_STOP], "{to_alice:?}");
    let state = t.watch(&a1, "alice", "c1", true, at(2));
    assert_eq!(state["watcher_count"], 1, "{state}");
    // bob's connection no longer follows alice through c1.
    t.disconnect(&a1, Ending::Explicit, at(3));
    assert_eq!(t.presence_flips(&b1, "alice"), Vec::<bool>::new());
}

#[test]
fn members_keep_their_order_and_a_copy_is_independent() {
    let member = |id: &str, ms: i64| MemberRecord {
        user_id: id.to_string(),
        channel_role: "channel_member".to_string(),
        created_at: at(ms),
        updated_at: at(ms),
    };
    let mut members: Members = [member("zed", 0), member("amy", 0), member("bea", 5)]
        .into_iter()
        .collect();
    let copy = members.clone();
    assert!(!members.insert(member("amy", 9)), "a member joins once");
    assert!(members.insert(member("cyd", 1)));
    assert_eq!(members.remove("zed").map(|m| m.user_id), Some("zed".into()));
    assert_eq!(members.remove("zed"), None);
    let ids = |m: &Members| m.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&members), ["amy", "cyd", "bea"]);
    assert_eq!(members.get("amy").map(|m| m.created_at), Some(at(0)));
    assert_eq!(ids(&copy), ["amy", "zed", "bea"]);
    assert_eq!(copy.len(), 3);
}

fn strs(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}
