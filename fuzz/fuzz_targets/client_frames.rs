#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_fuzz::client_frames::check(data));
