//! libFuzzer entry of the `admin_body` target; the body is `otg_fuzz::admin_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::admin_body(data));
