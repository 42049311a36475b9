//! The privacy matrix: an invisible user compared with a truly offline one, field by field, on every surface
//! another user can reach (queryUsers with and without an `online` filter and under every sort, channel members
//! and watchers, `watcher_count`, queryChannels, and every event), for invisibility set at connect, by upsert, by
//! partial update, while watched, across reconnects and across a server restart. Each scenario is a table of
//! steps; `twins::run_hiding` plays it (see there for how the two users are built and compared).

mod common;
mod twins;

use twins::{run_hiding, scenarios, Hiding, Scenario};

async fn run(scenario: &Scenario) {
    run_hiding(scenario, Hiding::Invisible).await;
}

#[tokio::test]
async fn invisible_at_connect() {
    run(&scenarios::AT_CONNECT).await;
}

#[tokio::test]
async fn invisible_by_upsert() {
    run(&scenarios::BY_UPSERT).await;
}

#[tokio::test]
async fn invisible_by_partial_update_while_watched() {
    run(&scenarios::BY_PARTIAL_UPDATE_WHILE_WATCHED).await;
}

#[tokio::test]
async fn invisible_set_while_offline() {
    run(&scenarios::SET_WHILE_OFFLINE).await;
}

#[tokio::test]
async fn invisible_across_reconnects() {
    run(&scenarios::ACROSS_RECONNECTS).await;
}

#[tokio::test]
async fn invisible_versus_a_crash() {
    run(&scenarios::VERSUS_A_CRASH).await;
}

#[tokio::test]
async fn invisible_across_a_restart() {
    run(&scenarios::ACROSS_A_RESTART).await;
}
