//! The audit entries and counts of batches answered with an error after the device
//! proved who it is (400, 403, 429, 503).
//!
//! They are written off the request path by one task, in groups, through a bounded
//! queue: a flood of refused batches must never slow the answers down or grow memory,
//! so when the queue is full an entry is dropped and counted
//! (`otg_audit_failed_batches_dropped_total`). Acked batches never go this way: their
//! audit entry is written with the batch itself.

use crate::error::ApiError;
use actix_web::ResponseError;
use otg_actors::store::{AuditEvent, AuditKind, Commit, DeviceEnrolment, Store, SyncCounts, SyncTotals};
use prometheus::{IntCounter, Registry};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Entries that may wait for the writer.
const QUEUE_CAPACITY: usize = 4096;
/// Most entries written in one commit.
const GROUP: usize = 256;

pub struct FailedBatches {
    queue: Mutex<Option<mpsc::Sender<(AuditEvent, SyncCounts)>>>,
    writer: Mutex<Option<actix_web::rt::task::JoinHandle<()>>>,
    dropped: IntCounter,
}

impl FailedBatches {
    /// Starts the writer; must run inside the actix runtime.
    pub fn start(store: Arc<dyn Store>, registry: &Registry) -> prometheus::Result<Self> {
        let dropped = IntCounter::new(
            "otg_audit_failed_batches_dropped_total",
            "Audit entries of refused batches dropped because the audit queue was full.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let (sender, mut receiver) = mpsc::channel::<(AuditEvent, SyncCounts)>(QUEUE_CAPACITY);
        let writer = actix_web::rt::spawn(async move {
            let mut group = Vec::with_capacity(GROUP);
            while receiver.recv_many(&mut group, GROUP).await > 0 {
                let (audit, stats) = group.drain(..).unzip();
                if let Err(error) = store.commit(&Commit { audit, stats, ..Commit::default() }).await {
                    tracing::warn!(%error, "could not write the audit entries of refused batches");
                }
            }
        });
        Ok(FailedBatches { queue: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)), dropped })
    }

    /// Queues the entry of a refused batch, or drops and counts it if the queue is full.
    pub fn record(
        &self,
        device: &DeviceEnrolment,
        error: &ApiError,
        batch_id: Option<String>,
        received_at: i64,
        latency: Duration,
    ) {
        let event = AuditEvent {
            at: received_at,
            org_id: device.org_id.clone(),
            device_id: device.device_id.clone(),
            event: AuditKind::BatchReceived {
                batch_id,
                outcome: error.code().into(),
                http_status: error.status_code().as_u16(),
                latency_ms: latency.as_millis() as u64,
                records: 0,
                acks: Vec::new(),
            },
        };
        let totals = SyncTotals { batches_failed: 1, ..SyncTotals::default() };
        let counts = SyncCounts::of(&event, totals);
        let queue = self.queue.lock().expect("audit queue lock");
        if queue.as_ref().is_none_or(|queue| queue.try_send((event, counts)).is_err()) {
            self.dropped.inc();
        }
    }

    /// Stops taking entries and waits until the queued ones are written.
    pub async fn close(&self) {
        drop(self.queue.lock().expect("audit queue lock").take());
        let writer = self.writer.lock().expect("audit writer lock").take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}
