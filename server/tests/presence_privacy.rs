//! Who may see a user's presence (`privacy_settings.presence.visible_to`). The matrix: a user whose presence is
//! visible to nobody compared with a truly offline one, field by field, on every surface the invisibility matrix
//! reads (queryUsers with a user token under every filter and sort and with a server token, channel members and
//! watchers, `watcher_count`, queryChannels, and every event the viewer hears), in the invisibility matrix's
//! scenarios with `visible_to` doing the hiding, plus profile changes while hidden (which, unlike an invisible
//! user's, reach others, as an offline user's do). Then the setting itself: validated, read back by the user and
//! by nobody else, and no profile change for others; and the same on every node of a cluster.

mod common;
mod twins;

use std::time::Duration;

use common::redis::Redis;
use common::*;
use serde_json::json;
use twins::scenarios::{self, SELF_CLEARS, SELF_HIDES};
use twins::Act::*;
use twins::Step::*;
use twins::{run_hiding, Hiding, Scenario};

/// A write of who may see the user's presence.
fn visible_to(value: impl Into<serde_json::Value>) -> serde_json::Value {
    json!({ "privacy_settings": { "presence": { "visible_to": value.into() } } })
}

async fn run(scenario: &Scenario) {
    run_hiding(scenario, Hiding::Nobody).await;
}

#[tokio::test]
async fn nobody_at_connect() {
    run(&scenarios::AT_CONNECT).await;
}

#[tokio::test]
async fn nobody_by_upsert() {
    run(&scenarios::BY_UPSERT).await;
}

#[tokio::test]
async fn nobody_by_partial_update_while_watched() {
    run(&scenarios::BY_PARTIAL_UPDATE_WHILE_WATCHED).await;
}

#[tokio::test]
async fn nobody_set_while_offline() {
    run(&scenarios::SET_WHILE_OFFLINE).await;
}

#[tokio::test]
async fn nobody_across_reconnects() {
    run(&scenarios::ACROSS_RECONNECTS).await;
}

#[tokio::test]
async fn nobody_versus_a_crash() {
    run(&scenarios::VERSUS_A_CRASH).await;
}

#[tokio::test]
async fn nobody_across_a_restart() {
    run(&scenarios::ACROSS_A_RESTART).await;
}

/// Status changes while hidden and while visible, against an offline twin that changes its status over REST.
const PROFILE_CHANGES: Scenario = Scenario {
    name: "profile changes",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[SELF_HIDES], &[Close]),
        Twin(&[Status], &[Status]),
        Twin(&[Ping, Status], &[Status]),
        Twin(&[SELF_CLEARS], &[Connect, Watch]),
        Twin(&[Status], &[Status]),
        Twin(&[Close], &[Close]),
    ],
};

#[tokio::test]
async fn nobody_changing_the_profile_reads_like_an_offline_user_doing_so() {
    run(&PROFILE_CHANGES).await;
}

#[tokio::test]
async fn visible_to_takes_everyone_or_nobody_and_a_clear_error_otherwise() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "ann" })]).await;
    for bad in [json!("sometimes"), json!(true), json!(["nobody"])] {
        let e = s
            .partial_update(&Auth::user("ann"), "ann", visible_to(bad.clone()), &[])
            .await
            .err(400, 4);
        assert!(
            e.message
                .contains("visible_to must be one of \"everyone\", \"nobody\""),
            "{bad}: {}",
            e.message
        );
    }
    let e = s
        .partial_update(&Auth::Server, "ann", visible_to("channel_members"), &[])
        .await
        .err(400, 4);
    assert!(
        e.message.contains("\"channel_members\" is not supported"),
        "{}",
        e.message
    );
    let e = s
        .partial_update(
            &Auth::user("ann"),
            "ann",
            json!({ "privacy_settings": { "presence": "nobody" } }),
            &[],
        )
        .await
        .err(400, 4);
    assert!(
        e.message
            .contains("privacy_settings.presence must be an object"),
        "{}",
        e.message
    );
    let e = s
        .upsert_as(
            &Auth::Server,
            &[json!({ "id": "ann", "privacy_settings": { "presence": { "visible_to": 1 } } })],
        )
        .await
        .err(400, 4);
    assert!(e.message.contains("visible_to"), "{}", e.message);
    // Nothing was written by the refused calls.
    assert_eq!(
        s.user_as(&Auth::user("ann"), "ann")
            .await
            .get("privacy_settings"),
        None
    );
    // On connect a bad value is dropped like any malformed field; a good one is taken.
    let ws = s
        .connect_with(
            "ann",
            json!({ "id": "ann", "privacy_settings": { "presence": { "visible_to": "x" } } }),
        )
        .await;
    assert_eq!(ws.me().get("privacy_settings"), None);
    ws.close(1000).await;
    let ws = s
        .connect_with(
            "ann",
            json!({ "id": "ann", "privacy_settings": { "presence": { "visible_to": "nobody" } } }),
        )
        .await;
    assert_eq!(
        ws.me()["privacy_settings"]["presence"]["visible_to"],
        "nobody"
    );
    assert_eq!(
        s.user_as(&Auth::user("ann"), "ann").await["online"],
        true,
        "online in her own view"
    );
    assert_eq!(
        s.user_as(&Auth::Server, "ann").await["online"],
        false,
        "offline to a server token"
    );
}

#[tokio::test]
async fn the_setting_is_read_back_by_the_user_alone_and_is_no_profile_change_for_others() {
    let s = Server::start().await;
    s.upsert(&[
        json!({ "id": "bea", "status": "here" }),
        json!({ "id": "cal" }),
    ])
    .await;
    let mut bea = s.connect("bea").await;
    let mut cal = s.connect("cal").await;
    s.subscribe_users(&cal, &["bea"]).await;
    let before = s.user_as(&Auth::user("bea"), "bea").await;
    s.partial_update(&Auth::user("bea"), "bea", visible_to("nobody"), &[])
        .await
        .ok(200);
    // Her own connection hears her own update, with the setting.
    let own = bea.wait_type("user.updated", WAIT).await;
    assert_eq!(
        own["user"]["privacy_settings"]["presence"]["visible_to"],
        "nobody"
    );
    // A follower hears her go offline, and no profile update: nothing else changed for others.
    let gone = cal.wait_presence("bea", false, WAIT).await;
    assert_eq!(gone["user"].get("privacy_settings"), None);
    let later = cal
        .collect(Duration::from_millis(300), |e| e["user"]["id"] == "bea")
        .await;
    assert!(later.is_empty(), "{later:?}");
    let after = s.user_as(&Auth::user("bea"), "bea").await;
    assert_eq!(
        after["updated_at"], before["updated_at"],
        "the setting dates nothing"
    );
    assert_eq!(
        after["privacy_settings"]["presence"]["visible_to"],
        "nobody"
    );
    for auth in [Auth::user("cal"), Auth::Server] {
        let seen = s.user_as(&auth, "bea").await;
        assert_eq!(seen.get("privacy_settings"), None, "{seen}");
        assert_eq!(seen["online"], false);
        assert_eq!(seen["status"], "here", "the profile stays visible");
    }
    // The control: back to everyone, and the follower sees her online again.
    s.partial_update(&Auth::user("bea"), "bea", visible_to("everyone"), &[])
        .await
        .ok(200);
    cal.wait_presence("bea", true, WAIT).await;
    // Set on connect from a second device: the first one hears her own update, the follower only the flip.
    let nobody =
        json!({ "id": "bea", "privacy_settings": { "presence": { "visible_to": "nobody" } } });
    let _phone = s.connect_with("bea", nobody).await;
    bea.wait_for("her own update", WAIT, |e| {
        e["type"] == "user.updated"
            && e["user"]["privacy_settings"]["presence"]["visible_to"] == "nobody"
    })
    .await;
    cal.wait_presence("bea", false, WAIT).await;
    let later = cal
        .collect(Duration::from_millis(300), |e| e["user"]["id"] == "bea")
        .await;
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn in_a_cluster_every_node_hides_whom_one_node_was_told_to_and_a_refused_value_reaches_no_log(
) {
    let redis = Redis::start();
    let a = Server::start_with(redis.node("a")).await;
    let b = Server::start_with(redis.node("b")).await;
    a.upsert(&[json!({ "id": "dia" }), json!({ "id": "eli" })])
        .await;
    let _dia = a.connect("dia").await;
    let mut eli = b.connect("eli").await;
    b.subscribe_users(&eli, &["dia"]).await;
    assert_eq!(b.user_as(&Auth::Server, "dia").await["online"], true);

    let entries = redis.xlen("presence:log").await;
    a.partial_update(
        &Auth::user("dia"),
        "dia",
        visible_to("channel_members"),
        &[],
    )
    .await
    .err(400, 4);
    assert_eq!(
        redis.xlen("presence:log").await,
        entries,
        "a refused value is no log entry"
    );

    a.partial_update(&Auth::user("dia"), "dia", visible_to("nobody"), &[])
        .await
        .ok(200);
    eli.wait_presence("dia", false, WAIT).await;
    for auth in [Auth::user("eli"), Auth::Server] {
        let seen = b.user_as(&auth, "dia").await;
        assert_eq!(seen["online"], false, "{seen}");
        assert_eq!(seen.get("privacy_settings"), None, "{seen}");
    }
    assert_eq!(
        b.user_as(&Auth::user("dia"), "dia").await["privacy_settings"]["presence"]["visible_to"],
        "nobody"
    );
    // The control: back to everyone through the other node.
    b.partial_update(&Auth::user("dia"), "dia", visible_to("everyone"), &[])
        .await
        .ok(200);
    eli.wait_presence("dia", true, WAIT).await;
    assert_eq!(a.user_as(&Auth::Server, "dia").await["online"], true);
}
