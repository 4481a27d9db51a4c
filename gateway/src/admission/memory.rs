//! The gateway's resident memory against its cap, sampled from /proc.

use super::decide::Memory;
use std::sync::atomic::{AtomicU64, Ordering};

/// Memory is high above this share of the cap: backlog slows down, leaving room for
/// the work in hand and for live batches (see `decide::memory_admits`).
const HIGH_WATERMARK_PERCENT: u64 = 90;

pub struct MemoryWatch {
    rss: AtomicU64,
    high: u64,
    limit: u64,
}

impl MemoryWatch {
    pub fn new(limit_bytes: u64) -> Self {
        let watch = MemoryWatch {
            rss: AtomicU64::new(0),
            high: limit_bytes / 100 * HIGH_WATERMARK_PERCENT,
            limit: limit_bytes,
        };
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

    pub fn level(&self) -> Memory {
        match self.rss() {
            rss if rss > self.limit => Memory::Full,
            rss if rss > self.high => Memory::High,
            _ => Memory::Normal,
        }
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
    fn memory_is_full_above_the_cap_and_high_above_nine_tenths_of_it() {
        assert_eq!(MemoryWatch::new(1024).level(), Memory::Full, "any process is above 1 KiB");
        assert_eq!(MemoryWatch::new(1 << 40).level(), Memory::Normal, "no test process is near 1 TiB");
        let rss = resident_bytes().unwrap();
        let watch = MemoryWatch::new(rss * 105 / 100);
        watch.rss.store(rss, Ordering::Relaxed);
        assert_eq!(watch.level(), Memory::High);
    }
}
