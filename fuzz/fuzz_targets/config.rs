//! libFuzzer entry of the `config` target; the body is `otg_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::config(data));
