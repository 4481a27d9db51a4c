//! The gateway's metrics: batches by outcome, records by ack status, rejections by
//! reason, batch latency and its stages. Labels come from small fixed sets, never from ids.

use crate::admission::decide::Priority;
use crate::batch_timing::BatchTiming;
use otg_schema::wire::{Ack, AckStatus};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

#[derive(Clone)]
pub struct GatewayMetrics {
    batches: IntCounterVec,
    records: IntCounterVec,
    rejections: IntCounterVec,
    batch_duration: HistogramVec,
    batch_stages: HistogramVec,
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
            batch_duration: HistogramVec::new(
                HistogramOpts::new(
                    "otg_ingest_batch_duration_seconds",
                    "From request to durable ack, for acked batches, by priority (live or backlog).",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["priority"],
            )?,
            batch_stages: HistogramVec::new(
                HistogramOpts::new(
                    "otg_ingest_batch_stage_seconds",
                    "Where an acked batch's time went, by stage (admission, queue, placement, commit, answer) and priority.",
                )
                .buckets(vec![0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["stage", "priority"],
            )?,
        };
        registry.register(Box::new(metrics.batches.clone()))?;
        registry.register(Box::new(metrics.records.clone()))?;
        registry.register(Box::new(metrics.rejections.clone()))?;
        registry.register(Box::new(metrics.batch_duration.clone()))?;
        registry.register(Box::new(metrics.batch_stages.clone()))?;
        for status in AckStatus::ALL {
            metrics.records.with_label_values(&[status.as_str()]);
        }
        Ok(metrics)
    }

    /// Where an acked batch's time went.
    pub fn observe_stages(&self, priority: Priority, timing: &BatchTiming) {
        for (stage, took) in timing.by_stage() {
            self.batch_stages.with_label_values(&[stage, priority.as_str()]).observe(took.as_secs_f64());
        }
    }

    /// Counts one answered batch; `acks` and its priority only when it was acked.
    pub fn observe_batch(&self, outcome: &str, priority: Option<Priority>, took: Duration, acks: &[Ack]) {
        self.batches.with_label_values(&[outcome]).inc();
        let Some(priority) = priority.filter(|_| !acks.is_empty()) else {
            return;
        };
        self.batch_duration.with_label_values(&[priority.as_str()]).observe(took.as_secs_f64());
        let mut by_status = [0u64; AckStatus::ALL.len()];
        for ack in acks {
            by_status
                [AckStatus::ALL.iter().position(|status| *status == ack.status).expect("every status is listed")] += 1;
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
