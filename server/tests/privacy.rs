//! The privacy matrix: an invisible user compared with a truly offline one, field by field, on every surface
//! another user can reach (queryUsers with and without an `online` filter and under every sort, channel members
//! and watchers, `watcher_count`, queryChannels, and every event), for invisibility set at connect, by upsert, by
//! partial update, while watched, across reconnects and across a server restart. Each scenario is a table of
//! steps; `twins::run` plays it (see there for how the two users are built and compared).

mod common;
mod twins;

use twins::Act::*;
use twins::{run, Scenario, Step::*};

const SERVER_CLEARS: twins::Act = Partial {
    server: true,
    invisible: false,
};
const SELF_HIDES: twins::Act = Partial {
    server: false,
    invisible: true,
};
const SELF_CLEARS: twins::Act = Partial {
    server: false,
    invisible: false,
};

/// Invisible from the connect on; cleared by the server while offline.
const AT_CONNECT: Scenario = Scenario {
    name: "at connect",
    steps: &[
        Twin(&[Connect], &[Connect]),
        Twin(&[Close], &[Close]),
        Twin(&[ConnectInvisible, Watch, Ping], &[]),
        Twin(&[Close], &[]),
        Twin(&[SERVER_CLEARS], &[]),
        Twin(&[Connect, Watch], &[Connect, Watch]),
    ],
};

/// Hidden by a server upsert while online and watching; cleared by upsert while offline.
const BY_UPSERT: Scenario = Scenario {
    name: "by upsert",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[Upsert { invisible: true }], &[Close]),
        Twin(&[Ping, Close], &[]),
        Twin(&[Upsert { invisible: false }], &[]),
        Twin(&[Connect], &[Connect]),
    ],
};

/// Hidden by the user's own partial update while watched; visible again while still connected.
const BY_PARTIAL_UPDATE_WHILE_WATCHED: Scenario = Scenario {
    name: "by partial update while watched",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[SELF_HIDES], &[Close]),
        Twin(&[Ping], &[]),
        Twin(&[SELF_CLEARS], &[Connect, Watch]),
        Twin(&[Close], &[Close]),
    ],
};

/// Set while offline, then several invisible sessions; cleared by upsert right after one ended abnormally.
const SET_WHILE_OFFLINE: Scenario = Scenario {
    name: "set while offline",
    steps: &[
        Twin(&[Connect], &[Connect]),
        Twin(&[Close], &[Close]),
        Twin(
            &[Partial {
                server: true,
                invisible: true,
            }],
            &[],
        ),
        Twin(&[Connect, Watch, Ping], &[]),
        Twin(&[Close], &[]),
        Twin(&[Connect, Watch], &[]),
        Twin(&[Drop, Upsert { invisible: false }], &[]),
    ],
};

/// Invisible sessions with quick abnormal reconnects (the flag persists), cleared by the user while offline.
const ACROSS_RECONNECTS: Scenario = Scenario {
    name: "across reconnects",
    steps: &[
        Twin(&[Connect], &[Connect]),
        Twin(&[Close], &[Close]),
        Twin(
            &[ConnectInvisible, Watch, Ping, Drop, Connect, Watch, Ping],
            &[],
        ),
        Twin(&[Drop], &[]),
        Twin(&[Connect, Ping, Close], &[]),
        Twin(&[SELF_CLEARS], &[]),
        Twin(&[Connect], &[Connect]),
    ],
};

/// Going invisible compared with a crash: the offline twin's socket drops and its grace window runs out.
const VERSUS_A_CRASH: Scenario = Scenario {
    name: "versus a crash",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[SELF_HIDES], &[Drop, AwaitOffline]),
        Twin(&[Ping, Drop], &[]),
        Twin(&[ConnectVisible, Watch], &[Connect, Watch]),
    ],
};

/// Invisible and connected when the server restarts; the flag and the frozen `last_active` come back from disk.
const ACROSS_A_RESTART: Scenario = Scenario {
    name: "across a restart",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[SELF_HIDES], &[Close]),
        Twin(&[Ping], &[]),
        Restart,
        Twin(&[Connect, Watch, Ping, Close], &[]),
        Twin(&[SERVER_CLEARS], &[]),
        Twin(&[Connect, Watch], &[Connect, Watch]),
    ],
};

#[tokio::test]
async fn invisible_at_connect() {
    run(&AT_CONNECT).await;
}

#[tokio::test]
async fn invisible_by_upsert() {
    run(&BY_UPSERT).await;
}

#[tokio::test]
async fn invisible_by_partial_update_while_watched() {
    run(&BY_PARTIAL_UPDATE_WHILE_WATCHED).await;
}

#[tokio::test]
async fn invisible_set_while_offline() {
    run(&SET_WHILE_OFFLINE).await;
}

#[tokio::test]
async fn invisible_across_reconnects() {
    run(&ACROSS_RECONNECTS).await;
}

#[tokio::test]
async fn invisible_versus_a_crash() {
    run(&VERSUS_A_CRASH).await;
}

#[tokio::test]
async fn invisible_across_a_restart() {
    run(&ACROSS_A_RESTART).await;
}
