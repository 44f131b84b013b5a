//! `cargo fuzz run token`: see `sluice::fuzzing::token` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::token(data));
