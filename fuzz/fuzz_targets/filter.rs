//! `cargo fuzz run filter`: see `sluice::fuzzing::filter` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::filter(data));
