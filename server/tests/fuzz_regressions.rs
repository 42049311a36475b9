//! The fuzz targets' properties (`fuzz/src/`, included here as they are) over the reproducers the fuzzer found
//! (`fuzz/regressions/<target>/`) and the seed inputs (`fuzz/seeds/<target>/`), in the normal test run; and what
//! each finding meant for a user, through the real server.

mod common;

#[path = "../../fuzz/src/filter.rs"]
mod filter;
#[path = "../../fuzz/src/server_frames.rs"]
mod server_frames;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::*;
use serde_json::json;

/// Runs `check` over every file of the target's reproducers and seeds; fails naming each file whose check
/// panicked.
fn check_inputs(target: &str, check: impl Fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut checked = 0;
    let mut failed = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            let bytes = std::fs::read(&path).expect("a readable input");
            checked += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(checked > 0, "no inputs for {target}");
    assert!(failed.is_empty(), "properties fail on: {failed:#?}");
}

#[test]
fn filter_and_sort_inputs_keep_their_properties() {
    check_inputs("filter", filter::check);
}

#[test]
fn connect_and_client_frame_inputs_keep_their_properties() {
    check_inputs("server_frames", server_frames::check);
}

/// `0`, `0.0` and `-0.0` are one number (a `rank: 0` filter matches all three), so a sort on it ties them and
/// the tie-break by id decides, in both directions. `-0.0` used to sort before the others.
#[tokio::test]
async fn zero_and_negative_zero_tie_in_a_sort() {
    let s = Server::in_process().await;
    s.upsert(&[
        json!({ "id": "a", "rank": 0 }),
        json!({ "id": "b", "rank": 0.0 }),
        json!({ "id": "c", "rank": -0.0 }),
        json!({ "id": "d", "rank": 1 }),
    ])
    .await;
    let mut zeros = s.user_ids(json!({ "rank": 0 })).await;
    zeros.sort();
    assert_eq!(zeros, strs(&["a", "b", "c"]));
    for (direction, want) in [(1, ["a", "b", "c", "d"]), (-1, ["d", "a", "b", "c"])] {
        let got = s
            .user_ids_as(
                &Auth::Server,
                json!({
                    "filter_conditions": { "rank": { "$exists": true } },
                    "sort": [{ "field": "rank", "direction": direction }],
                }),
            )
            .await;
        assert_eq!(got, strs(&want), "sort on rank, direction {direction}");
    }
}

/// A user id is matched exactly, however the filter reaches it. Ids that read as timestamps used to match every id
/// naming the same instant, except when the filter pinned the id (then only the exact id was looked up).
#[tokio::test]
async fn an_id_that_reads_as_a_timestamp_matches_only_itself() {
    let s = Server::in_process().await;
    s.upsert(&[
        json!({ "id": "2024-05-01T10:00:00Z" }),
        json!({ "id": "2024-05-01T12:00:00+02:00" }),
    ])
    .await;
    for filter in [
        json!({ "id": "2024-05-01T10:00:00Z" }),
        json!({ "id": { "$in": ["2024-05-01T10:00:00Z"] } }),
        json!({ "$or": [{ "id": "2024-05-01T10:00:00Z" }, { "id": "nobody" }] }),
        json!({ "$nor": [{ "id": { "$ne": "2024-05-01T10:00:00Z" } }] }),
    ] {
        assert_eq!(
            s.user_ids(filter.clone()).await,
            strs(&["2024-05-01T10:00:00Z"]),
            "{filter}"
        );
    }
}
