//! What the fleet observed: per-second throughput and refusals, batch latency of live
//! and backlog uploads, where live batches' time went (the gateway's `Server-Timing`),
//! and the load tester's own scheduling lag, shared by every simulated device.

use hdrhistogram::Histogram;
use otg_client::SyncReport;
use otg_schema::signing::LIVE_WINDOW_MS;
use serde::Serialize;
use std::collections::BTreeMap;
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
    lag: Histogram<u64>,
}

/// Where a live batch's time went that the gateway did not account for: the network,
/// and the load tester's own waits once the request was due.
pub const OUTSIDE: &str = "outside";

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
    /// The time of this second's live batches, ms summed by where it went: the
    /// gateway's stages (its `Server-Timing`) and `outside`.
    pub live_stage_ms: BTreeMap<String, f64>,
    /// How late this second's live syncs started after they were due, p99, ms: the
    /// load tester's own lag, not the gateway's.
    pub lag_p99_ms: f64,
    #[serde(skip)]
    lag: Option<Histogram<u64>>,
    /// The gateway's resident memory sampled in this second, bytes.
    pub gateway_rss_bytes: u64,
}

/// What a run observed, at its end.
pub struct Finished {
    pub timeline: Vec<Second>,
    pub live: Latency,
    pub backlog: Latency,
    /// How late live syncs started after they were due (the load tester's own lag).
    pub lag: Latency,
}

impl Second {
    /// Where most of this second's live batch time went.
    pub fn dominant_stage(&self) -> Option<&str> {
        self.live_stage_ms.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(stage, _)| stage.as_str())
    }
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
            inner: Mutex::new(Inner { seconds: Vec::new(), live: histogram(), backlog: histogram(), lag: histogram() }),
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
                    let took_ms = upload.took.as_secs_f64() * 1000.0;
                    let stages = upload.server_timing.as_deref().map(server_timing).unwrap_or_default();
                    let mut inside = 0.0;
                    for (stage, ms) in stages {
                        if stage == "total" {
                            inside = ms;
                        } else {
                            *bucket.live_stage_ms.entry(stage).or_default() += ms;
                        }
                    }
                    *bucket.live_stage_ms.entry(OUTSIDE.to_owned()).or_default() += (took_ms - inside).max(0.0);
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

    /// A live sync started `lag` after it was due.
    pub fn observe_lag(&self, lag: Duration) {
        let mut inner = self.inner.lock().expect("stats lock");
        let micros = lag.as_micros().max(1) as u64;
        inner.lag.saturating_record(micros);
        let second = self.started.elapsed().as_secs() as usize;
        inner.second(second).lag.get_or_insert_with(histogram).saturating_record(micros);
    }

    pub fn sample_rss(&self, bytes: u64) {
        let mut inner = self.inner.lock().expect("stats lock");
        let second = self.started.elapsed().as_secs() as usize;
        let bucket = inner.second(second);
        bucket.gateway_rss_bytes = bucket.gateway_rss_bytes.max(bytes);
    }

    /// The timeline, the latency of live and backlog batches, and the load tester's
    /// scheduling lag.
    pub fn finish(&self) -> Finished {
        let inner = self.inner.lock().expect("stats lock");
        let p99 = |histogram: &Option<Histogram<u64>>| {
            histogram.as_ref().map_or(0.0, |histogram| histogram.value_at_quantile(0.99) as f64 / 1000.0)
        };
        let timeline = inner
            .seconds
            .iter()
            .map(|second| Second { live_p99_ms: p99(&second.live), lag_p99_ms: p99(&second.lag), ..second.clone() })
            .collect();
        Finished { timeline, live: latency(&inner.live), backlog: latency(&inner.backlog), lag: latency(&inner.lag) }
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

/// `admission;dur=0.41, queue;dur=0.02, total;dur=3.10` as (name, ms) pairs; what does
/// not parse is left out.
fn server_timing(header: &str) -> Vec<(String, f64)> {
    header
        .split(',')
        .filter_map(|metric| {
            let mut parts = metric.split(';').map(str::trim);
            let name = parts.next().filter(|name| !name.is_empty())?;
            let ms = parts.find_map(|parameter| parameter.strip_prefix("dur="))?.parse().ok()?;
            Some((name.to_owned(), ms))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_reads_each_stage_and_skips_what_does_not_parse() {
        assert_eq!(
            server_timing("admission;dur=1.50, queue;dur=0.25,commit;desc=\"x\";dur=40, bad, total;dur=x"),
            vec![("admission".into(), 1.5), ("queue".into(), 0.25), ("commit".into(), 40.0)]
        );
    }
}
