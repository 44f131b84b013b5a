//! `cargo fuzz run manifest`: see `sluice::fuzzing::manifest` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::manifest(data));
