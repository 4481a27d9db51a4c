//! The drain rate and the recent refusals that `Retry-After` is computed from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Records acked per second, measured while the gateway is refusing work (then it
/// drains as fast as the store can); the configured estimate until then.
pub struct DrainMeter {
    acked: AtomicU64,
    /// (when the last tick was, acked then, the rate)
    state: Mutex<(Instant, u64, f64)>,
}

impl DrainMeter {
    pub fn new(estimate_per_s: f64) -> Self {
        DrainMeter { acked: AtomicU64::new(0), state: Mutex::new((Instant::now(), 0, estimate_per_s)) }
    }

    pub fn add(&self, records: u64) {
        self.acked.fetch_add(records, Ordering::Relaxed);
    }

    /// Takes a measurement; it moves the rate only when the gateway was full.
    pub fn tick(&self, under_pressure: bool) {
        let acked = self.acked.load(Ordering::Relaxed);
        let mut state = self.state.lock().expect("drain meter lock");
        let (last_at, last_acked, rate) = *state;
        let seconds = last_at.elapsed().as_secs_f64();
        let measured = (acked - last_acked) as f64 / seconds.max(0.001);
        let rate = if under_pressure && measured > 0.0 { 0.5 * rate + 0.5 * measured } else { rate };
        *state = (Instant::now(), acked, rate);
    }

    pub fn per_second(&self) -> f64 {
        self.state.lock().expect("drain meter lock").2
    }
}

/// A count over the current and the previous tick (one to two seconds).
#[derive(Default)]
pub struct RecentCount {
    current: AtomicU64,
    previous: AtomicU64,
}

impl RecentCount {
    pub fn add(&self, count: u64) {
        self.current.fetch_add(count, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.current.load(Ordering::Relaxed) + self.previous.load(Ordering::Relaxed)
    }

    pub fn tick(&self) {
        self.previous.store(self.current.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}
