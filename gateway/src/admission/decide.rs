//! Admission decisions, pure: a batch's priority, whether it fits the in-flight
//! budget, and how long a refused device should wait.

use std::time::Duration;

/// How urgent a batch is: `Live` if its newest record is recent (someone is checking
/// in now), `Backlog` if it is all catching up after time offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Live,
    Backlog,
}

impl Priority {
    /// `newest_recorded_at` is the batch's newest record; a clock ahead of ours counts
    /// as live.
    pub fn of(newest_recorded_at: i64, received_at: i64, live_window: Duration) -> Self {
        if received_at.saturating_sub(newest_recorded_at) <= live_window.as_millis() as i64 {
            Priority::Live
        } else {
            Priority::Backlog
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Live => "live",
            Priority::Backlog => "backlog",
        }
    }
}

/// The records that may be admitted and unanswered at once. Backlog may fill only its
/// share, so under pressure backlog is refused first and live batches always find room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub total: u64,
    pub backlog: u64,
}

impl Budget {
    pub fn new(total: u64, backlog_share_percent: u64) -> Self {
        Budget { total, backlog: total * backlog_share_percent.min(100) / 100 }
    }

    /// Whether `wanted` more records fit beside the `held` ones at `priority`. With
    /// nothing held anything fits, so no batch waits forever for room it can never get.
    pub fn fits(&self, held: u64, wanted: u64, priority: Priority) -> bool {
        let limit = match priority {
            Priority::Live => self.total,
            Priority::Backlog => self.backlog,
        };
        held == 0 || held.saturating_add(wanted) <= limit
    }

    /// Whether a backlog batch that waited its turn, holding room for an average batch,
    /// fits with its own count: it may go past the backlog's share by half of the live
    /// share, so it is not refused for being larger than the average, and live batches
    /// always keep at least half of theirs.
    pub fn fits_waited(&self, held: u64, wanted: u64) -> bool {
        let limit = self.backlog + (self.total - self.backlog) / 2;
        held == 0 || held.saturating_add(wanted) <= limit
    }
}

/// Resident memory against the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Normal,
    /// Above 90% of the cap.
    High,
    /// Above the cap.
    Full,
}

/// Whether a request may go on at this `memory`, its device's priority hint and the
/// records in flight: anything while memory is normal; above 90% of the cap live
/// batches, and backlog only while it holds less than a quarter of its share, so the
/// store keeps writing (and flushing what it holds) at a slower pace rather than
/// stopping with memory it frees only by writing on; above the cap, nothing.
pub fn memory_admits(memory: Memory, hint: Option<Priority>, held_records: u64, budget: &Budget) -> bool {
    match memory {
        Memory::Normal => true,
        Memory::High => hint == Some(Priority::Live) || held_records < budget.backlog / 4,
        Memory::Full => false,
    }
}

/// Shortest `Retry-After`: the header counts whole seconds.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `Retry-After`, however deep the queue.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// How long a refused device waits: the time the store takes to drain the records
/// ahead of it (those in flight and those refused just now, which will come back),
/// spread over [wait, 2 × wait) by `jitter` in [0, 1) so that a fleet refused together
/// does not return together.
pub fn retry_after(ahead_records: u64, drain_per_s: f64, jitter: f64) -> Duration {
    let seconds = (ahead_records as f64 / drain_per_s.max(1.0)).min(MAX_RETRY_AFTER.as_secs_f64());
    let drain = Duration::from_secs_f64(seconds);
    spread(drain.max(MIN_RETRY_AFTER), jitter)
}

/// `wait` spread over [wait, 2 × wait) by `jitter` in [0, 1), within the bounds.
pub fn spread(wait: Duration, jitter: f64) -> Duration {
    wait.max(MIN_RETRY_AFTER).mul_f64(1.0 + jitter.clamp(0.0, 1.0)).min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn a_batch_is_live_when_its_newest_record_is_recent() {
        let window = Duration::from_secs(600);
        let now = 1_764_028_800_000;
        assert_eq!(Priority::of(now - 10 * MINUTE, now, window), Priority::Live);
        assert_eq!(Priority::of(now - 10 * MINUTE - 1, now, window), Priority::Backlog);
        assert_eq!(Priority::of(now + MINUTE, now, window), Priority::Live, "a clock ahead is live");
        assert_eq!(Priority::of(i64::MIN, now, window), Priority::Backlog);
    }

    #[test]
    fn backlog_is_refused_before_live() {
        let budget = Budget::new(1_000, 75);
        assert!(budget.fits(600, 100, Priority::Backlog));
        assert!(!budget.fits(700, 100, Priority::Backlog), "backlog stops at its 750");
        assert!(budget.fits(700, 100, Priority::Live), "live still finds room");
        assert!(!budget.fits(950, 100, Priority::Live));
        assert!(budget.fits(0, 5_000, Priority::Backlog), "a lone batch always fits");
    }

    #[test]
    fn retry_after_follows_the_work_ahead() {
        assert_eq!(retry_after(0, 100_000.0, 0.0), MIN_RETRY_AFTER);
        assert_eq!(retry_after(1_000_000, 100_000.0, 0.0), Duration::from_secs(10));
        assert_eq!(retry_after(1_000_000, 100_000.0, 0.5), Duration::from_secs(15));
        assert_eq!(retry_after(u64::MAX, 1.0, 0.9), MAX_RETRY_AFTER);
        assert_eq!(retry_after(10, 0.0, 0.0), Duration::from_secs(10), "a zero drain rate counts as one a second");
    }

    #[test]
    fn a_batch_that_waited_may_take_half_of_the_live_share() {
        let budget = Budget::new(1_000, 80);
        assert!(budget.fits_waited(800, 100), "up to 800 + 100 of live's 200");
        assert!(!budget.fits_waited(800, 101));
        assert!(budget.fits_waited(0, 5_000), "a lone batch always fits");
    }

    #[test]
    fn high_memory_slows_backlog_and_full_memory_stops_everything() {
        let budget = Budget::new(1_000, 80);
        assert!(memory_admits(Memory::Normal, Some(Priority::Backlog), 790, &budget));
        assert!(
            memory_admits(Memory::High, Some(Priority::Backlog), 199, &budget),
            "backlog goes on below a quarter of its 800"
        );
        assert!(!memory_admits(Memory::High, Some(Priority::Backlog), 200, &budget));
        assert!(!memory_admits(Memory::High, None, 200, &budget), "no hint counts as backlog");
        assert!(memory_admits(Memory::High, Some(Priority::Live), 990, &budget));
        assert!(!memory_admits(Memory::Full, Some(Priority::Live), 0, &budget));
    }

    proptest! {
        #[test]
        fn backlog_never_holds_more_than_its_share(total in 500u64..100_000, share in 1u64..=100, held in 1u64..200_000, wanted in 1u64..1_000) {
            let budget = Budget::new(total, share);
            if budget.fits(held, wanted, Priority::Backlog) {
                prop_assert!(held + wanted <= budget.backlog);
                prop_assert!(budget.fits(held, wanted, Priority::Live), "whatever backlog may take, live may too");
            }
            if budget.fits(held, wanted, Priority::Live) {
                prop_assert!(held + wanted <= total);
            }
        }

        #[test]
        fn retry_after_is_bounded_and_spread(ahead in 0u64..u64::MAX, drain in 0.0f64..1e7, jitter in 0.0f64..1.0) {
            let wait = retry_after(ahead, drain, jitter);
            prop_assert!((MIN_RETRY_AFTER..=MAX_RETRY_AFTER).contains(&wait));
            prop_assert!(wait >= retry_after(ahead, drain, 0.0), "jitter only ever adds");
        }
    }
}
