//! The properties the fuzz targets check, one module per target. Each `check` takes the fuzzer's bytes and panics
//! when a property fails. The regression tests of the server (`server/tests/fuzz_regressions.rs`) and of the client
//! (`tests/fuzz_regressions.rs`) include these same files and run them over `fuzz/regressions/<target>/`.

pub mod client_frames;
pub mod filter;
pub mod server_frames;
