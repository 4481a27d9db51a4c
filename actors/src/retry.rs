//! Retrying a transient store failure: exponential backoff with full jitter, under a
//! deadline, after which the batch is answered 503 and the device retries later.
//!
//! The decision is pure (`RetryPolicy::after_failure`); `retrying` carries it out. A
//! commit may be sent again safely: every write is keyed (a record by device and seq),
//! so a commit that did land before its failure was reported lands again unchanged.

use crate::store::StoreError;
use prometheus::IntCounter;
use std::future::Future;
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The cap of the first wait; it doubles with every attempt.
    pub base: Duration,
    /// The most any one wait's cap grows to.
    pub max: Duration,
    /// No attempt starts this long after the first one.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(20),
            max: Duration::from_millis(500),
            deadline: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// What to do after attempt number `attempt` (from 1) failed transiently, `elapsed`
    /// after the first attempt began. `jitter` in [0, 1) picks the wait within its cap
    /// ("full jitter"), so a fleet of failed batches does not come back in lockstep.
    pub fn after_failure(&self, attempt: u32, elapsed: Duration, jitter: f64) -> Retry {
        let doublings = attempt.saturating_sub(1).min(31);
        let cap = self.base.saturating_mul(1 << doublings).min(self.max);
        let wait = cap.mul_f64(jitter.clamp(0.0, 1.0));
        if elapsed + wait >= self.deadline {
            Retry::GiveUp
        } else {
            Retry::After(wait)
        }
    }
}

/// Whether trying the same call again may succeed.
fn is_transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

/// Makes `call` until it succeeds, fails for good, or `policy` gives up; counts each
/// retry. Used for batch commits.
pub async fn retrying<T, Call: Future<Output = Result<T, StoreError>>>(
    policy: &RetryPolicy,
    retries: &IntCounter,
    mut call: impl FnMut() -> Call,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) => error,
            Err(error) => return Err(error),
        };
        match policy.after_failure(attempt, started.elapsed(), rand::random()) {
            Retry::After(wait) => {
                tracing::warn!(%error, attempt, ?wait, "store call failed; retrying");
                retries.inc();
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Retry::GiveUp => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(20),
        max: Duration::from_millis(500),
        deadline: Duration::from_secs(2),
    };

    #[test]
    fn caps_double_up_to_the_maximum() {
        let caps: Vec<Retry> =
            (1..=7).map(|attempt| POLICY.after_failure(attempt, Duration::ZERO, 0.999_999)).collect();
        let millis: Vec<u128> = caps
            .iter()
            .map(|retry| match retry {
                Retry::After(wait) => wait.as_millis(),
                Retry::GiveUp => panic!("gave up before the deadline"),
            })
            .collect();
        assert_eq!(millis, vec![19, 39, 79, 159, 319, 499, 499]);
    }

    #[test]
    fn gives_up_when_the_wait_would_pass_the_deadline() {
        assert_eq!(POLICY.after_failure(3, Duration::from_millis(1_990), 0.5), Retry::GiveUp);
        assert_eq!(POLICY.after_failure(3, Duration::from_millis(1_900), 0.5), Retry::After(Duration::from_millis(40)));
        assert_eq!(POLICY.after_failure(1, Duration::from_secs(2), 0.0), Retry::GiveUp);
    }

    /// A call that fails transiently `failures` times, then succeeds; counts its calls.
    fn flaky(
        failures: u32,
        error: StoreError,
    ) -> (impl FnMut() -> std::future::Ready<Result<u32, StoreError>>, std::rc::Rc<std::cell::Cell<u32>>) {
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = calls.clone();
        let call = move || {
            counted.set(counted.get() + 1);
            std::future::ready(if counted.get() <= failures { Err(error.clone()) } else { Ok(counted.get()) })
        };
        (call, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_until_it_succeeds() {
        let retries = IntCounter::new("retries", "retries").unwrap();
        let (call, calls) = flaky(3, StoreError::Unavailable("timeout".into()));
        assert_eq!(retrying(&POLICY, &retries, call).await.unwrap(), 4);
        assert_eq!((calls.get(), retries.get()), (4, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_stays_down_is_given_up_on_at_the_deadline() {
        let retries = IntCounter::new("retries", "retries").unwrap();
        let started = Instant::now();
        let (call, calls) = flaky(u32::MAX, StoreError::Unavailable("down".into()));
        assert!(matches!(retrying(&POLICY, &retries, call).await, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() < POLICY.deadline, "no attempt after the deadline");
        assert!(calls.get() > 3, "it tried several times: {}", calls.get());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_store_is_not_retried() {
        let retries = IntCounter::new("retries", "retries").unwrap();
        let (call, calls) = flaky(u32::MAX, StoreError::Failed("disk full".into()));
        assert!(matches!(retrying(&POLICY, &retries, call).await, Err(StoreError::Failed(_))));
        assert_eq!((calls.get(), retries.get()), (1, 0));
    }

    proptest! {
        #[test]
        fn every_wait_is_within_its_cap_and_before_the_deadline(attempt in 1u32..100, elapsed_ms in 0u64..3_000, jitter in 0.0f64..1.0) {
            let elapsed = Duration::from_millis(elapsed_ms);
            if let Retry::After(wait) = POLICY.after_failure(attempt, elapsed, jitter) {
                let cap = POLICY.base.saturating_mul(1 << (attempt - 1).min(31)).min(POLICY.max);
                prop_assert!(wait <= cap);
                prop_assert!(elapsed + wait < POLICY.deadline);
            } else {
                prop_assert!(elapsed + POLICY.max >= POLICY.deadline, "gave up with time for a wait left");
            }
        }
    }
}
