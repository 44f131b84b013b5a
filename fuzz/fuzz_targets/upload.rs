//! `cargo fuzz run upload`: see `sluice::fuzzing::upload` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::upload(data));
