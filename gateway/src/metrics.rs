//! The gateway's metrics: batches by outcome, records by ack status, rejections by
//! reason, batch latency. Labels come from small fixed sets, never from ids.

use otg_schema::wire::{Ack, AckStatus};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use std::time::Duration;

#[derive(Clone)]
pub struct GatewayMetrics {
    batches: IntCounterVec,
    records: IntCounterVec,
    rejections: IntCounterVec,
    batch_duration: Histogram,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = GatewayMetrics {
            batches: IntCounterVec::new(
                Opts::new("otg_ingest_batches_total", "Batches answered, by outcome: ok or the error code."),
                &["outcome"],
            )?,
            records: IntCounterVec::new(
                Opts::new("otg_ingest_records_total", "Records acked, by ack status."),
                &["status"],
            )?,
            rejections: IntCounterVec::new(
                Opts::new("otg_ingest_rejections_total", "Records acked rejected, by reason."),
                &["reason"],
            )?,
            batch_duration: Histogram::with_opts(
                HistogramOpts::new("otg_ingest_batch_duration_seconds", "From request to durable ack, for answered batches.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )?,
        };
        registry.register(Box::new(metrics.batches.clone()))?;
        registry.register(Box::new(metrics.records.clone()))?;
        registry.register(Box::new(metrics.rejections.clone()))?;
        registry.register(Box::new(metrics.batch_duration.clone()))?;
        for status in AckStatus::ALL {
            metrics.records.with_label_values(&[status.as_str()]);
        }
        Ok(metrics)
    }

    /// Counts one answered batch; `acks` only when it was acked.
    pub fn observe_batch(&self, outcome: &str, took: Duration, acks: &[Ack]) {
        self.batches.with_label_values(&[outcome]).inc();
        if acks.is_empty() {
            return;
        }
        self.batch_duration.observe(took.as_secs_f64());
        let mut by_status = [0u64; AckStatus::ALL.len()];
        for ack in acks {
            by_status[AckStatus::ALL.iter().position(|status| *status == ack.status).expect("every status is listed")] += 1;
            if let Some(reason) = ack.reason {
                self.rejections.with_label_values(&[reason.as_str()]).inc();
            }
        }
        for (status, count) in AckStatus::ALL.iter().zip(by_status) {
            if count > 0 {
                self.records.with_label_values(&[status.as_str()]).inc_by(count);
            }
        }
    }
}
