//! What the fleet observed: per-second throughput and refusals, and batch latency of
//! live and backlog uploads, shared by every simulated device.

use hdrhistogram::Histogram;
use otg_client::SyncReport;
use otg_schema::signing::LIVE_WINDOW_MS;
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Stats {
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    seconds: Vec<Second>,
    live: Histogram<u64>,
    backlog: Histogram<u64>,
}

#[derive(Default, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub backlog_records: u64,
    pub live_records: u64,
    pub refused_429: u64,
    pub refused_503: u64,
    pub failures: u64,
    /// Live batch latency in this second, p99, ms.
    pub live_p99_ms: f64,
    #[serde(skip)]
    live: Option<Histogram<u64>>,
    /// The gateway's resident memory sampled in this second, bytes.
    pub gateway_rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub batches: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            started: Instant::now(),
            inner: Mutex::new(Inner { seconds: Vec::new(), live: histogram(), backlog: histogram() }),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts every upload of a sync.
    pub fn observe(&self, report: &SyncReport, now_ms: i64) {
        let mut inner = self.inner.lock().expect("stats lock");
        let second = self.started.elapsed().as_secs() as usize;
        for upload in &report.uploads {
            let live = now_ms - upload.newest_recorded_at <= LIVE_WINDOW_MS;
            let micros = upload.took.as_micros().max(1) as u64;
            let bucket = inner.second(second);
            match upload.status {
                200 if live => {
                    bucket.live_records += upload.records as u64;
                    bucket.live.get_or_insert_with(histogram).saturating_record(micros);
                }
                200 => bucket.backlog_records += upload.records as u64,
                429 => bucket.refused_429 += 1,
                503 => bucket.refused_503 += 1,
                _ => bucket.failures += 1,
            }
            if upload.status == 200 {
                let histogram = if live { &mut inner.live } else { &mut inner.backlog };
                histogram.saturating_record(micros);
            }
        }
    }

    pub fn sample_rss(&self, bytes: u64) {
        let mut inner = self.inner.lock().expect("stats lock");
        let second = self.started.elapsed().as_secs() as usize;
        let bucket = inner.second(second);
        bucket.gateway_rss_bytes = bucket.gateway_rss_bytes.max(bytes);
    }

    /// The timeline, and the latency of live and backlog batches.
    pub fn finish(&self) -> (Vec<Second>, Latency, Latency) {
        let inner = self.inner.lock().expect("stats lock");
        let seconds = inner
            .seconds
            .iter()
            .map(|second| Second {
                live_p99_ms: second.live.as_ref().map_or(0.0, |live| live.value_at_quantile(0.99) as f64 / 1000.0),
                ..second.clone()
            })
            .collect();
        (seconds, latency(&inner.live), latency(&inner.backlog))
    }

    /// Backlog records acked, live records acked, 429s and 503s since `from`.
    pub fn totals_since(&self, from: Duration) -> (u64, u64, u64, u64) {
        let inner = self.inner.lock().expect("stats lock");
        inner.seconds.iter().filter(|second| second.second >= from.as_secs()).fold((0, 0, 0, 0), |totals, second| {
            (
                totals.0 + second.backlog_records,
                totals.1 + second.live_records,
                totals.2 + second.refused_429,
                totals.3 + second.refused_503,
            )
        })
    }

    /// Records acked in `[from, to)` seconds since the start, backlog and live.
    pub fn acked_between(&self, from: Duration, to: Duration) -> u64 {
        let inner = self.inner.lock().expect("stats lock");
        inner
            .seconds
            .iter()
            .filter(|second| (from.as_secs()..to.as_secs()).contains(&second.second))
            .map(|second| second.backlog_records + second.live_records)
            .sum()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Inner {
    fn second(&mut self, second: usize) -> &mut Second {
        while self.seconds.len() <= second {
            let next = self.seconds.len() as u64;
            self.seconds.push(Second { second: next, ..Second::default() });
        }
        &mut self.seconds[second]
    }
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    let ms = |quantile| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Latency {
        batches: histogram.len(),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    }
}
