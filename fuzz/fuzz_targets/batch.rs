//! libFuzzer entry of the `batch` target; the body is `otg_fuzz::batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otg_fuzz::batch(data));
