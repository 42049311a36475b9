//! The scenarios both privacy matrices play (`privacy.rs` with invisibility, `presence_privacy.rs` with presence
//! visible to nobody): where an `Act` says `invisible`, the subject hides or shows itself again (see
//! [`super::Hiding`]).

use super::Act::*;
use super::{Scenario, Step::*};

pub const SERVER_CLEARS: super::Act = Partial {
    server: true,
    invisible: false,
};
pub const SELF_HIDES: super::Act = Partial {
    server: false,
    invisible: true,
};
pub const SELF_CLEARS: super::Act = Partial {
    server: false,
    invisible: false,
};

/// Hidden from the connect on; cleared by the server while offline.
pub const AT_CONNECT: Scenario = Scenario {
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
pub const BY_UPSERT: Scenario = Scenario {
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
pub const BY_PARTIAL_UPDATE_WHILE_WATCHED: Scenario = Scenario {
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
pub const SET_WHILE_OFFLINE: Scenario = Scenario {
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
pub const ACROSS_RECONNECTS: Scenario = Scenario {
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
pub const VERSUS_A_CRASH: Scenario = Scenario {
    name: "versus a crash",
    steps: &[
        Twin(&[Connect, Watch], &[Connect, Watch]),
        Twin(&[SELF_HIDES], &[Drop, AwaitOffline]),
        Twin(&[Ping, Drop], &[]),
        Twin(&[ConnectVisible, Watch], &[Connect, Watch]),
    ],
};

/// Invisible and connected when the server restarts; the flag and the frozen `last_active` come back from disk.
pub const ACROSS_A_RESTART: Scenario = Scenario {
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
