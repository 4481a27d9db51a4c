//! libFuzzer entry of the `signature` target; the body is `otg_fuzz::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::signature(data));
