//! The report: figures, verification, the per-second timeline; written as JSON, as
//! markdown and as an SVG chart of throughput and live latency over time.

use crate::admin::Admin;
use crate::fleet::AckCount;
use crate::routing::Routing;
use crate::stats::{Finished, Latency, Second, Stats};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub command: String,
    pub org_id: String,
    /// Gateways loaded, all on one store, and how devices were spread over them.
    pub gateways: usize,
    pub routing: Routing,
    /// Device ownership events summed over the gateways (non-zero on a shared store).
    pub ownership: Ownership,
    pub devices: usize,
    /// Records/s acked with kiosks uploading back to back, if measured.
    pub steady_records_per_s: Option<f64>,
    pub storm: Option<Storm>,
    pub live: Latency,
    pub backlog: Latency,
    /// How late live syncs started after they were due: the load tester's own lag,
    /// which a gateway's latency figure must not be blamed for.
    pub scheduling_lag: Latency,
    /// The seconds whose live p99 was over the run's `--slow-ms`, with where most of
    /// their live batches' time went.
    pub slow_seconds: Vec<SlowSecond>,
    pub refused_429: u64,
    pub refused_503: u64,
    pub gateway_peak_rss_bytes: u64,
    pub verification: Verification,
    pub timeline: Vec<Second>,
}

/// A second whose live p99 was over the threshold.
#[derive(Debug, Clone, Serialize)]
pub struct SlowSecond {
    pub second: u64,
    pub live_p99_ms: f64,
    /// The gateway's stage (admission, queue, placement, commit, answer) or `outside`
    /// (network, the load tester's own waits) that took most of its live batches' time.
    pub dominant_stage: String,
    pub lag_p99_ms: f64,
}

/// The reconnect storm.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub backlog_records: u64,
    /// From the first reconnect until the last backlog record was acked.
    pub drain_seconds: f64,
    pub drain_records_per_s: f64,
    /// Backlog records/s over the seconds in which the gateway refused work: what it
    /// drains when the fleet asks for more than it can take.
    pub saturated_records_per_s: Option<f64>,
    /// `saturated_records_per_s` (or, never saturated, `drain_records_per_s`) over
    /// `steady_records_per_s`.
    pub drain_vs_steady: Option<f64>,
}

impl Storm {
    pub fn measure(
        stats: &Stats,
        backlog_records: u64,
        reconnected: Duration,
        drain: Duration,
        steady: Option<f64>,
    ) -> Self {
        let timeline = stats.finish().timeline;
        let storm: Vec<&Second> = timeline
            .iter()
            .filter(|second| second.second >= reconnected.as_secs() && second.second < (reconnected + drain).as_secs())
            .collect();
        let saturated: Vec<&&Second> =
            storm.iter().filter(|second| second.refused_503 + second.refused_429 > 0).collect();
        let saturated_records_per_s = (!saturated.is_empty()).then(|| {
            saturated.iter().map(|second| second.backlog_records).sum::<u64>() as f64 / saturated.len() as f64
        });
        let drain_records_per_s = backlog_records as f64 / drain.as_secs_f64().max(0.001);
        let drain_vs_steady =
            steady.map(|steady| saturated_records_per_s.unwrap_or(drain_records_per_s) / steady.max(1.0));
        Storm {
            backlog_records,
            drain_seconds: drain.as_secs_f64(),
            drain_records_per_s,
            saturated_records_per_s,
            drain_vs_steady,
        }
    }
}

/// `otg_device_ownership_events_total` summed over the gateways, as each counts since
/// it started (a gateway restarted by `crash` from its restart).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Ownership {
    /// Devices a gateway took on: at its first batch there, or after another's claim.
    pub claimed: u64,
    /// Batches decided again because another gateway claimed their device meanwhile.
    pub fenced: u64,
    /// Placements redone because an employee's timeline moved under them.
    pub timeline_moved: u64,
}

impl Ownership {
    pub async fn sum(admins: &[Admin]) -> Self {
        let mut sum = Ownership::default();
        for admin in admins {
            let count = |event: &'static str| async move {
                let series = format!("otg_device_ownership_events_total{{event=\"{event}\"}}");
                admin.metric(&series).await.unwrap_or(0.0) as u64
            };
            sum.claimed += count("claimed").await;
            sum.fenced += count("fenced").await;
            sum.timeline_moved += count("timeline_moved").await;
        }
        sum
    }
}

/// Every record acked exactly once and stored exactly once.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub acks: AckCount,
    /// Devices whose `next_seq` at the gateway is not one past their last record.
    pub next_seq_mismatches: u64,
    /// Records the gateway counts as stored (`accepted` + `conflict`) for the run's org.
    pub stored: u64,
    /// Acks `duplicate`: a resend of a record whose first ack was lost (a crash).
    pub duplicate_acks: u64,
    /// Syncs that ended on an error a retry does not mend.
    pub failed_syncs: u64,
    pub ok: bool,
}

impl Verification {
    pub fn new(acks: AckCount, next_seq_mismatches: u64, stored: u64, duplicate_acks: u64, failed_syncs: u64) -> Self {
        let ok = acks.never_acked == 0
            && acks.acked_more_than_once == 0
            && acks.rejected == 0
            && next_seq_mismatches == 0
            && stored == acks.records;
        Verification { acks, next_seq_mismatches, stored, duplicate_acks, failed_syncs, ok }
    }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        org_id: &str,
        devices: usize,
        steady_records_per_s: Option<f64>,
        storm: Option<Storm>,
        observed: Finished,
        slow_ms: f64,
        verification: Verification,
    ) -> Self {
        let Finished { timeline, live, backlog, lag } = observed;
        let slow_seconds = timeline
            .iter()
            .filter(|second| second.live_p99_ms > slow_ms)
            .map(|second| SlowSecond {
                second: second.second,
                live_p99_ms: second.live_p99_ms,
                dominant_stage: second.dominant_stage().unwrap_or("unknown").to_owned(),
                lag_p99_ms: second.lag_p99_ms,
            })
            .collect();
        Report {
            scenario: scenario.to_owned(),
            command: String::new(),
            org_id: org_id.to_owned(),
            gateways: 1,
            routing: Routing::Hash,
            ownership: Ownership::default(),
            devices,
            steady_records_per_s,
            storm,
            live,
            backlog,
            scheduling_lag: lag,
            slow_seconds,
            refused_429: timeline.iter().map(|second| second.refused_429).sum(),
            refused_503: timeline.iter().map(|second| second.refused_503).sum(),
            gateway_peak_rss_bytes: timeline.iter().map(|second| second.gateway_rss_bytes).max().unwrap_or(0),
            verification,
            timeline,
        }
    }

    /// Writes report.json, report.md and report.svg into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        self.chart(&dir.join("report.svg"))
    }

    pub fn markdown(&self) -> String {
        let mut text =
            format!("# otg-loadtest: {}\n\n`{}`\n\n| figure | value |\n|---|---:|\n", self.scenario, self.command);
        let mut row = |name: &str, value: String| {
            let _ = writeln!(text, "| {name} | {value} |");
        };
        row("gateways", format!("{} ({:?} routing)", self.gateways, self.routing).to_lowercase());
        row("devices", self.devices.to_string());
        if let Some(steady) = self.steady_records_per_s {
            row("steady state, records/s", format!("{steady:.0}"));
        }
        if let Some(storm) = &self.storm {
            row("backlog records", storm.backlog_records.to_string());
            row("drain time", format!("{:.1} s", storm.drain_seconds));
            row("drain, records/s (whole storm)", format!("{:.0}", storm.drain_records_per_s));
            if let Some(saturated) = storm.saturated_records_per_s {
                row("drain, records/s (seconds the gateway was full)", format!("{saturated:.0}"));
            }
            if let Some(ratio) = storm.drain_vs_steady {
                row("drain / steady state", format!("{ratio:.2}"));
            }
        }
        let quantiles = |latency: &Latency| {
            format!("{:.1} / {:.1} / {:.1} / {:.1} ms", latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms)
        };
        for (name, latency) in [("live", &self.live), ("backlog", &self.backlog)] {
            row(&format!("{name} batches"), latency.batches.to_string());
            row(&format!("{name} latency p50 / p95 / p99 / max"), quantiles(latency));
        }
        if self.scheduling_lag.batches > 0 {
            row("load tester's own lag (live sync due → sent) p50 / p95 / p99 / max", quantiles(&self.scheduling_lag));
        }
        row("429 / 503 answers", format!("{} / {}", self.refused_429, self.refused_503));
        row(
            "gateway peak RSS (largest gateway)",
            format!("{:.0} MiB", self.gateway_peak_rss_bytes as f64 / (1024.0 * 1024.0)),
        );
        if self.ownership.claimed > 0 {
            let Ownership { claimed, fenced, timeline_moved } = &self.ownership;
            row(
                "device claims / batches fenced / placements redone",
                format!("{claimed} / {fenced} / {timeline_moved}"),
            );
        }
        if !self.slow_seconds.is_empty() {
            let named: Vec<String> = self
                .slow_seconds
                .iter()
                .map(|slow| format!("{} s: {:.0} ms, {}", slow.second, slow.live_p99_ms, slow.dominant_stage))
                .collect();
            row("seconds over the live p99 threshold (second: p99, dominant stage)", named.join("; "));
        }
        let check = &self.verification;
        row("records", check.acks.records.to_string());
        row(
            "acked exactly once / more than once / never",
            format!("{} / {} / {}", check.acks.acked_once, check.acks.acked_more_than_once, check.acks.never_acked),
        );
        row("stored at the gateway (accepted + conflict)", check.stored.to_string());
        row("devices whose next_seq is off", check.next_seq_mismatches.to_string());
        row("duplicate acks (resent after a lost answer)", check.duplicate_acks.to_string());
        row(
            "verification",
            if check.ok { "**passed**: nothing lost, nothing stored twice".into() } else { "**FAILED**".into() },
        );
        text
    }

    /// Three panels over time: records/s acked (backlog and live); live p99 latency
    /// beside the load tester's own lag; the gateway's resident memory.
    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1000, 880)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, rest) = root.split_vertically(360);
        let (lower, bottom) = rest.split_vertically(270);
        let seconds = self.timeline.len().max(2) as u64;
        let peak =
            self.timeline.iter().map(|second| second.backlog_records + second.live_records).max().unwrap_or(1).max(1);
        let mut throughput = ChartBuilder::on(&upper)
            .caption(format!("otg-loadtest {}: records acked per second", self.scenario), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..seconds, 0u64..peak + peak / 10)?;
        throughput.configure_mesh().x_desc("seconds").y_desc("records/s").draw()?;
        throughput
            .draw_series(LineSeries::new(
                self.timeline.iter().map(|second| (second.second, second.backlog_records)),
                &BLUE,
            ))?
            .label("backlog")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        throughput
            .draw_series(LineSeries::new(
                self.timeline.iter().map(|second| (second.second, second.live_records)),
                &GREEN,
            ))?
            .label("live")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        throughput.configure_series_labels().border_style(BLACK).draw()?;

        let slowest = self.timeline.iter().map(|second| second.live_p99_ms.max(second.lag_p99_ms)).fold(1.0, f64::max);
        let mut latency = ChartBuilder::on(&lower)
            .caption("live batch latency and the load tester's own lag, p99 per second (ms)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..seconds, 0f64..slowest * 1.1)?;
        latency.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
        latency
            .draw_series(LineSeries::new(
                self.timeline
                    .iter()
                    .filter(|second| second.live_p99_ms > 0.0)
                    .map(|second| (second.second, second.live_p99_ms)),
                &RED,
            ))?
            .label("live latency")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        latency
            .draw_series(LineSeries::new(
                self.timeline
                    .iter()
                    .filter(|second| second.lag_p99_ms > 0.0)
                    .map(|second| (second.second, second.lag_p99_ms)),
                &MAGENTA,
            ))?
            .label("load tester's lag")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        latency.configure_series_labels().border_style(BLACK).draw()?;

        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let largest = mib(self.gateway_peak_rss_bytes).max(1.0);
        let mut memory = ChartBuilder::on(&bottom)
            .caption("gateway resident memory (MiB; the largest gateway)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..seconds, 0f64..largest * 1.1)?;
        memory.configure_mesh().x_desc("seconds").y_desc("MiB").draw()?;
        memory.draw_series(LineSeries::new(
            self.timeline
                .iter()
                .filter(|second| second.gateway_rss_bytes > 0)
                .map(|second| (second.second, mib(second.gateway_rss_bytes))),
            &BLACK,
        ))?;
        root.present()?;
        Ok(())
    }
}
