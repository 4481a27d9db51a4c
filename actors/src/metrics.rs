//! Metrics of the actors and stores, registered on the gateway's registry.
//!
//! Names follow `otg_<subsystem>_<name>_<unit>`; no label carries a device or employee id.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Duration;

/// Group commit: how long each fsync'd group took and how many commits it covered.
#[derive(Clone)]
pub struct StoreMetrics {
    commit_duration: Histogram,
    group_size: Histogram,
    commit_failures: IntCounter,
    live_log_duration: Histogram,
    pub(crate) queue_depth: IntGauge,
    /// The embedded store's memtables: the largest part of its memory.
    pub(crate) write_buffer: IntGauge,
}

impl StoreMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = StoreMetrics {
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "otg_store_commit_duration_seconds",
                    "Time to write one commit group, with its fsync if it has one (every group a caller waits for).",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]),
            )?,
            group_size: Histogram::with_opts(
                HistogramOpts::new("otg_store_commit_group_size", "Device commits covered by one fsync.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            live_log_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "otg_store_live_log_duration_seconds",
                    "Time to write and fdatasync one group of live commits to the live log.",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]),
            )?,
            commit_failures: IntCounter::new(
                "otg_store_commit_failures_total",
                "Commit groups that failed to write or fsync.",
            )?,
            queue_depth: IntGauge::new(
                "otg_store_commit_queue_depth",
                "Commits waiting for the committer when it took its last group.",
            )?,
            write_buffer: IntGauge::new(
                "otg_store_write_buffer_bytes",
                "Bytes in the embedded store's memtables, not yet flushed to tables.",
            )?,
        };
        registry.register(Box::new(metrics.write_buffer.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.commit_duration.clone()))?;
        registry.register(Box::new(metrics.group_size.clone()))?;
        registry.register(Box::new(metrics.commit_failures.clone()))?;
        registry.register(Box::new(metrics.live_log_duration.clone()))?;
        Ok(metrics)
    }

    pub fn observe_group(&self, commits: usize, took: Duration, succeeded: bool) {
        self.commit_duration.observe(took.as_secs_f64());
        self.group_size.observe(commits as f64);
        if !succeeded {
            self.commit_failures.inc();
        }
    }

    pub fn observe_live_log(&self, took: Duration) {
        self.live_log_duration.observe(took.as_secs_f64());
    }
}

/// Device and conflict actors: how many are alive, their queues, what they found.
#[derive(Clone)]
pub struct DeviceMetrics {
    pub active_actors: IntGauge,
    pub conflict_actors_active: IntGauge,
    pub conflict_employees_cached: IntGauge,
    pub conflict_requests_waiting: IntGauge,
    pub mailbox_full: IntCounter,
    /// Idle stops alone: `device_actor_stops{reason="idle"}`, kept for the dashboards
    /// that read it.
    pub actors_evicted: IntCounter,
    /// Device actors stopped, by `StopReason`.
    pub device_actor_stops: IntCounterVec,
    /// Panics caught in an actor's work, by kind of actor (`supervision`).
    pub actor_panics: IntCounterVec,
    /// Batches queued for or in work at device actors, all devices together.
    pub mailbox_batches: IntGauge,
    pub conflicts: IntCounterVec,
    /// Commits tried again after a transient store failure.
    pub store_retries: IntCounter,
    /// Device claims, and batches decided again because ownership moved under them.
    pub ownership: IntCounterVec,
}

impl DeviceMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = DeviceMetrics {
            active_actors: IntGauge::new("otg_device_actors_active", "Device actors alive now.")?,
            conflict_actors_active: IntGauge::new("otg_conflict_actors_active", "Conflict actors running (as many as device_arbiters, each keeping a share of the employees).")?,
            conflict_employees_cached: IntGauge::new("otg_conflict_employees_cached", "Employees whose timelines the conflict actors have cached.")?,
            conflict_requests_waiting: IntGauge::new("otg_conflict_requests_waiting", "Placements waiting at a conflict actor: for an employee another device's batch holds, or (backlog) for the backlog placement running.")?,
            mailbox_full: IntCounter::new("otg_device_mailbox_full_total", "Batches refused with 429 because the device's mailbox was full.")?,
            actors_evicted: IntCounter::new("otg_device_actors_evicted_total", "Device actors stopped after their idle timeout.")?,
            device_actor_stops: IntCounterVec::new(Opts::new("otg_device_actor_stops_total", "Device actors stopped, by reason: idle (memory follows active devices) or other_lane (its next batch starts on its own lane)."), &["reason"])?,
            actor_panics: IntCounterVec::new(Opts::new("otg_actor_panics_total", "Panics caught in a device or conflict actor's work: that batch or placement got an error, nothing of it acked, and the actor went on."), &["actor"])?,
            mailbox_batches: IntGauge::new("otg_device_mailbox_batches", "Batches queued for or in work at device actors, all devices together.")?,
            conflicts: IntCounterVec::new(Opts::new("otg_conflicts_detected_total", "Conflicts found, by kind."), &["kind"])?,
            store_retries: IntCounter::new("otg_store_commit_retries_total", "Batch commits tried again after a transient store failure.")?,
            ownership: IntCounterVec::new(Opts::new("otg_device_ownership_events_total", "Device ownership on a shared store, by event: claimed (this gateway took the device on, at its first batch here or after another gateway's claim), fenced (another gateway claimed the device under a batch, decided again), timeline_moved (an employee's timeline moved under a placement, placed again)."), &["event"])?,
        };
        registry.register(Box::new(metrics.ownership.clone()))?;
        for event in crate::ingest::OwnershipEvent::ALL {
            metrics.ownership.with_label_values(&[event.as_str()]);
        }
        registry.register(Box::new(metrics.store_retries.clone()))?;
        registry.register(Box::new(metrics.mailbox_batches.clone()))?;
        registry.register(Box::new(metrics.conflicts.clone()))?;
        for kind in crate::conflict_rules::ConflictKind::ALL {
            metrics.conflicts.with_label_values(&[kind.as_str()]);
        }
        registry.register(Box::new(metrics.active_actors.clone()))?;
        registry.register(Box::new(metrics.conflict_actors_active.clone()))?;
        registry.register(Box::new(metrics.conflict_employees_cached.clone()))?;
        registry.register(Box::new(metrics.conflict_requests_waiting.clone()))?;
        registry.register(Box::new(metrics.mailbox_full.clone()))?;
        registry.register(Box::new(metrics.actors_evicted.clone()))?;
        registry.register(Box::new(metrics.device_actor_stops.clone()))?;
        for reason in crate::device_actor::StopReason::ALL {
            metrics.device_actor_stops.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(metrics.actor_panics.clone()))?;
        for actor in crate::supervision::ActorKind::ALL {
            metrics.actor_panics.with_label_values(&[actor.as_str()]);
        }
        Ok(metrics)
    }
}
