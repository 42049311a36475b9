//! The fuzz targets' properties (`fuzz/src/`, included here as they are) over the reproducers the fuzzer found
//! (`fuzz/regressions/<target>/`) and the seed inputs (`fuzz/seeds/<target>/`), in the normal test run.

#[path = "../../fuzz/src/filter.rs"]
mod filter;
#[path = "../../fuzz/src/server_frames.rs"]
mod server_frames;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

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

