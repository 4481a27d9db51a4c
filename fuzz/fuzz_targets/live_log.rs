//! libFuzzer entry of the `live_log` target; the body is `otg_fuzz::live_log`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::live_log(data));
