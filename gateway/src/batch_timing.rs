//! Where an acked batch's time went, stage by stage, so that a stall can be laid at one
//! stage's door without temporary instrumentation: observed in
//! `otg_ingest_batch_stage_seconds`, sent back to the device in a `Server-Timing`
//! header (a load tester attributes its slow batches from it), and logged when the
//! batch took longer than `slow_batch_log_ms` (at most a few a second).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use otg_actors::Stages;
use otg_schema::wire::BatchResponse;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::Duration;

/// The stages in the order a batch goes through them.
pub const STAGES: [&str; 5] = ["admission", "queue", "placement", "commit", "answer"];

pub struct BatchTiming {
    /// From the request's first byte to the hand-over to the device's actor: the body's
    /// arrival, the signature, decoding, checks, admission and the org's settings.
    pub admission: Duration,
    /// Inside the actors: the mailbox, placement and the durable write.
    pub stages: Stages,
    /// From the request's first byte to the acks being ready.
    pub total: Duration,
}

impl BatchTiming {
    /// Each stage's time, in `STAGES`' order; `answer` is what is left: waking the
    /// request's task and encoding the acks.
    pub fn by_stage(&self) -> [(&'static str, Duration); 5] {
        let Stages { queued, placement, commit } = self.stages;
        let answer = self.total.saturating_sub(self.admission + queued + placement + commit);
        [
            (STAGES[0], self.admission),
            (STAGES[1], queued),
            (STAGES[2], placement),
            (STAGES[3], commit),
            (STAGES[4], answer),
        ]
    }

    /// `admission;dur=0.41, queue;dur=0.02, ..., total;dur=3.10`: milliseconds, in the
    /// W3C Server Timing header's format.
    pub fn server_timing(&self) -> String {
        let mut header = String::new();
        for (stage, took) in self.by_stage().into_iter().chain([("total", self.total)]) {
            let separator = if header.is_empty() { "" } else { ", " };
            let _ = write!(header, "{separator}{stage};dur={:.2}", took.as_secs_f64() * 1000.0);
        }
        header
    }

    /// The stage that took longest.
    pub fn dominant(&self) -> &'static str {
        self.by_stage().into_iter().max_by_key(|(_, took)| *took).map_or("admission", |(stage, _)| stage)
    }
}

/// Slow batches logged, at most `PER_SECOND` a second: a saturated store makes every
/// batch slow, and a log line each would bury the log (the stage histograms count
/// them all).
pub struct SlowBatchLog {
    /// 0: never.
    threshold: Duration,
    limiter: DefaultDirectRateLimiter,
}

impl SlowBatchLog {
    const PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("not zero");

    pub fn new(threshold_ms: u64) -> Self {
        SlowBatchLog {
            threshold: Duration::from_millis(threshold_ms),
            limiter: RateLimiter::direct(Quota::per_second(Self::PER_SECOND)),
        }
    }

    /// Logs `response`'s batch if it took at least the threshold and the log has room.
    pub fn observe(&self, response: &BatchResponse, timing: &BatchTiming) {
        if self.threshold.is_zero() || timing.total < self.threshold || self.limiter.check().is_err() {
            return;
        }
        tracing::warn!(
            batch_id = %response.batch_id,
            records = response.acks.len(),
            timing = %timing.server_timing(),
            dominant = timing.dominant(),
            "slow batch: {} ms, most of it in {}",
            timing.total.as_millis(),
            timing.dominant()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> BatchTiming {
        BatchTiming {
            admission: Duration::from_micros(1_500),
            stages: Stages {
                queued: Duration::from_micros(250),
                placement: Duration::from_millis(2),
                commit: Duration::from_millis(40),
            },
            total: Duration::from_millis(45),
        }
    }

    #[test]
    fn the_stages_add_up_to_the_total_and_the_longest_dominates() {
        let timing = timing();
        let sum: Duration = timing.by_stage().iter().map(|(_, took)| *took).sum();
        assert_eq!(sum, timing.total);
        assert_eq!(timing.dominant(), "commit");
        assert_eq!(
            timing.server_timing(),
            "admission;dur=1.50, queue;dur=0.25, placement;dur=2.00, commit;dur=40.00, answer;dur=1.25, total;dur=45.00"
        );
    }
}
