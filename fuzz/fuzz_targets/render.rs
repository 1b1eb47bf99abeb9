//! cargo-fuzz target: see `targets::render` (shared with the corpus replay in `cargo test`).
#![no_main]

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::render(data));
