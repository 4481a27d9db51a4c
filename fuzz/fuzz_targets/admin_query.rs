//! libFuzzer entry of the `admin_query` target; the body is `otg_fuzz::admin_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::admin_query(data));
