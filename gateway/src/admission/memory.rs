//! The gateway's resident memory against its cap, sampled from /proc.

use std::sync::atomic::{AtomicU64, Ordering};

/// New work is refused above this share of the cap, leaving room for the work in hand.
const HIGH_WATERMARK_PERCENT: u64 = 90;

pub struct MemoryWatch {
    rss: AtomicU64,
    high: u64,
}

impl MemoryWatch {
    pub fn new(limit_bytes: u64) -> Self {
        let watch = MemoryWatch { rss: AtomicU64::new(0), high: limit_bytes / 100 * HIGH_WATERMARK_PERCENT };
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

    pub fn is_high(&self) -> bool {
        self.rss() > self.high
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
    fn a_process_above_its_cap_is_high_and_one_below_is_not() {
        assert!(MemoryWatch::new(1024).is_high(), "any process is above 1 KiB");
        assert!(!MemoryWatch::new(1 << 40).is_high(), "no test process is near 1 TiB");
    }
}
