//! Which of a device's records are evaluated for conflicts now: a pure function of
//! the device's evaluation progress and the seqs it has delivered.
//!
//! Records are evaluated in seq order. A record behind a gap is stored and acked
//! `accepted`, and waits until the gap fills or the org's gap timeout passes.

use crate::seq_ranges::SeqRanges;
use crate::store::EvaluationProgress;

/// What to evaluate after a batch, and where evaluation then stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluationPlan {
    /// Evaluate every received seq below this not evaluated yet.
    pub evaluate_below: u64,
    /// Seqs from here up were evaluated before (only a timed-out gap's late fillers
    /// lie below it unevaluated, and they arrive in this batch).
    pub previously_below: u64,
    pub after: EvaluationProgress,
}

/// Plans evaluation once a batch's seqs are in `received`, at `now`.
pub fn plan(before: EvaluationProgress, received: &SeqRanges, now: i64, gap_timeout_ms: i64) -> EvaluationPlan {
    let timed_out = before.waiting_since.is_some_and(|since| now - since >= gap_timeout_ms);
    let highest = received.highest().unwrap_or(0);
    let evaluate_below = if timed_out { highest + 1 } else { before.evaluated_below.max(received.next_seq()) };
    let waiting = highest >= evaluate_below;
    // The wait counts from when the records now first in line began to wait; once the
    // line moved, the records still waiting waited at most since now.
    let moved = evaluate_below > before.evaluated_below;
    let waiting_since = match (waiting, moved) {
        (false, _) => None,
        (true, true) => Some(now),
        (true, false) => before.waiting_since.or(Some(now)),
    };
    EvaluationPlan {
        evaluate_below,
        previously_below: before.evaluated_below,
        after: EvaluationProgress { evaluated_below: evaluate_below, waiting_since },
    }
}

impl EvaluationPlan {
    /// Whether a seq of this batch is evaluated now, or waits behind a gap.
    pub fn evaluates(&self, seq: u64) -> bool {
        seq < self.evaluate_below
    }

    /// Seqs delivered earlier that waited and are evaluated now.
    pub fn released(&self) -> std::ops::Range<u64> {
        self.previously_below..self.evaluate_below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: i64 = 1_000;

    fn received(seqs: &[u64]) -> SeqRanges {
        let mut ranges = SeqRanges::default();
        for &seq in seqs {
            ranges.insert(seq);
        }
        ranges
    }

    #[test]
    fn records_in_order_are_evaluated_at_once() {
        let plan = plan(EvaluationProgress::default(), &received(&[1, 2, 3]), 0, TIMEOUT);
        assert!(plan.evaluates(3));
        assert_eq!(plan.after, EvaluationProgress { evaluated_below: 4, waiting_since: None });
    }

    #[test]
    fn records_behind_a_gap_wait_until_it_fills() {
        let waiting = plan(EvaluationProgress::default(), &received(&[1, 3, 4]), 10, TIMEOUT);
        assert!(waiting.evaluates(1) && !waiting.evaluates(3));
        assert_eq!(waiting.after, EvaluationProgress { evaluated_below: 2, waiting_since: Some(10) });

        let still = plan(waiting.after, &received(&[1, 3, 4, 6]), 500, TIMEOUT);
        assert_eq!(still.after.waiting_since, Some(10), "the wait counts from the first record behind the gap");

        let filled = plan(still.after, &received(&[1, 2, 3, 4, 6]), 600, TIMEOUT);
        assert_eq!(filled.released(), 2..5);
        assert_eq!(
            filled.after,
            EvaluationProgress { evaluated_below: 5, waiting_since: Some(600) },
            "seq 6 waits its own timeout"
        );
    }

    #[test]
    fn after_the_gap_timeout_the_waiting_records_are_evaluated() {
        let waiting = plan(EvaluationProgress::default(), &received(&[1, 3, 4]), 10, TIMEOUT);
        let timed_out = plan(waiting.after, &received(&[1, 3, 4, 5]), 10 + TIMEOUT, TIMEOUT);
        assert_eq!(timed_out.released(), 2..6);
        assert_eq!(timed_out.after, EvaluationProgress { evaluated_below: 6, waiting_since: None });
        let late_filler = plan(timed_out.after, &received(&[1, 2, 3, 4, 5]), 20 + TIMEOUT, TIMEOUT);
        assert!(late_filler.evaluates(2), "a seq that fills a timed-out gap is evaluated on arrival");
    }
}
