//! The `client_frames` fuzz target's properties (`fuzz/src/client_frames.rs`, included as it is) over the
//! reproducers the fuzzer found (`fuzz/regressions/client_frames/`) and its seeds (`fuzz/seeds/client_frames/`).
#![cfg(not(target_arch = "wasm32"))]

#[path = "../fuzz/src/client_frames.rs"]
mod client_frames;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn frame_inputs_keep_their_properties() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut checked = 0;
    let mut failed = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("client_frames")) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            let bytes = std::fs::read(&path).expect("a readable input");
            checked += 1;
            if catch_unwind(AssertUnwindSafe(|| client_frames::check(&bytes))).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(checked > 0, "no inputs");
    assert!(failed.is_empty(), "properties fail on: {failed:#?}");
}
