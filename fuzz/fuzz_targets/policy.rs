//! `cargo fuzz run policy`: see `sluice::fuzzing::policy` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::policy(data));
