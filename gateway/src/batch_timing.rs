//! Where an acked batch's time went, stage by stage, so that a stall can be laid at one
//! stage's door without temporary instrumentation: observed in
//! `otg_ingest_batch_stage_seconds`, sent back to the device in a `Server-Timing`
//! header (a load tester attributes its slow batches from it), and logged when the
//! batch took longer than `slow_batch_log_ms`.

use otg_actors::Stages;
use std::fmt::Write as _;
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
