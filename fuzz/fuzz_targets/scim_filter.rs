//! The `scim_filter` surface: see `blockyard::fuzzing` for what the check holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blockyard::fuzzing::check("scim_filter", data));
