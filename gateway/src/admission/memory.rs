//! The gateway's resident memory against its cap, sampled from /proc.

use super::decide::Priority;
use std::sync::atomic::{AtomicU64, Ordering};

/// Backlog is refused above this share of the cap, leaving room for the work in hand
/// and for live batches, which are refused only at the cap itself.
const HIGH_WATERMARK_PERCENT: u64 = 90;

pub struct MemoryWatch {
    rss: AtomicU64,
    high: u64,
    limit: u64,
}

impl MemoryWatch {
    pub fn new(limit_bytes: u64) -> Self {
        let watch = MemoryWatch { rss: AtomicU64::new(0), high: limit_bytes / 100 * HIGH_WATERMARK_PERCENT, limit: limit_bytes };
        watch.sample();
        watch
    }

    pub fn sample(&self) {
        if let Some(rss) = resident_bytes() {
            self.rss.store(rss, Ordering::Relaxed);
        }
    }

    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Whether a request of this priority (`None`: not said) is refused for memory.
    pub fn refuses(&self, priority: Option<Priority>) -> bool {
        let threshold = if priority == Some(Priority::Live) { self.limit } else { self.high };
        self.rss() > threshold
    }
}

/// `VmRSS` of /proc/self/status; `None` where there is no /proc (the cap is then off).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_above_its_cap_is_refused_and_one_below_is_not() {
        assert!(MemoryWatch::new(1024).refuses(Some(Priority::Live)), "any process is above 1 KiB");
        assert!(!MemoryWatch::new(1 << 40).refuses(None), "no test process is near 1 TiB");
    }

    #[test]
    fn live_batches_are_refused_only_at_the_cap_itself() {
        let rss = resident_bytes().unwrap();
        let watch = MemoryWatch::new(rss * 105 / 100);
        watch.rss.store(rss, Ordering::Relaxed);
        assert!(watch.refuses(Some(Priority::Backlog)) && watch.refuses(None), "above 90% of the cap");
        assert!(!watch.refuses(Some(Priority::Live)), "below the cap");
    }
}
