//! The `workflow` surface: see `blockyard::fuzzing` for what the check holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blockyard::fuzzing::check("workflow", data));
