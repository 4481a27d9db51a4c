//! The server clock, in the unix milliseconds the protocol speaks.

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
