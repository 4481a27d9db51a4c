//! When to try again, pure: after a refusal the gateway's `Retry-After` plus jitter;
//! after a failure, exponential backoff with full jitter on the org's retry settings.

use std::time::Duration;

/// The wait after a 429/503 that said to wait `retry_after`: at least that, plus up to
/// a quarter more (`jitter` in [0, 1)), so devices told the same do not return together.
pub fn after_refusal(retry_after: Duration, jitter: f64) -> Duration {
    retry_after + retry_after.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
}

/// The wait after the `attempt`-th failure in a row (from 1): drawn from [0, cap) by
/// `jitter`, the cap `base` doubled per attempt up to `max` ("full jitter").
pub fn after_failure(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let cap = base.saturating_mul(1 << attempt.saturating_sub(1).min(31)).min(max);
    cap.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_refusal_waits_at_least_what_the_gateway_said() {
        assert_eq!(after_refusal(Duration::from_secs(4), 0.0), Duration::from_secs(4));
        assert_eq!(after_refusal(Duration::from_secs(4), 0.5), Duration::from_millis(4_500));
    }

    #[test]
    fn failure_caps_double_to_the_maximum() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(60));
        let caps: Vec<u64> = (1..=9).map(|attempt| after_failure(attempt, base, max, 1.0).as_millis() as u64).collect();
        assert_eq!(caps, vec![500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    }

    proptest! {
        #[test]
        fn waits_stay_within_their_bounds(attempt in 1u32..200, base_ms in 1u64..10_000, max_ms in 1u64..600_000, jitter in 0.0f64..1.0) {
            let (base, max) = (Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            prop_assert!(after_failure(attempt, base, max, jitter) <= max);
            let told = Duration::from_millis(base_ms);
            let wait = after_refusal(told, jitter);
            prop_assert!(wait >= told && wait <= told.mul_f64(1.25));
        }
    }
}
