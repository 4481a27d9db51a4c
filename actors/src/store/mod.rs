//! The `Store` trait: what otg keeps, in the time-bucketed model ScyllaDB stores natively.
//!
//! Records are keyed by (device, seq), which makes every write idempotent, and listed
//! by (org, employee, UTC day) ordered by time, which is what conflict detection reads.
//! Nothing above this trait knows which store it talks to; both pass `conformance`.

mod embedded;
mod keys;
mod model;

#[cfg(test)]
pub(crate) mod conformance;

pub use embedded::{EmbeddedStore, EmbeddedStoreOptions};
pub use model::*;

use async_trait::async_trait;
use otg_schema::{OrgSettings, UtcDay};

/// Why a store call failed. Nothing was acked on any of them: the device keeps its
/// records and sends them again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    /// The call may succeed if made again (a timeout, a node down): worth a retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refuses work until an operator acts (a failed disk write, closed).
    #[error("store failed: {0}")]
    Failed(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Where otg keeps everything. Writes return only once durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Enrols a device; `AlreadyExists` if the id was ever enrolled.
    async fn enrol_device(&self, enrolment: &DeviceEnrolment) -> Result<(), StoreError>;

    async fn device(&self, device_id: &str) -> Result<Option<DeviceEnrolment>, StoreError>;

    /// Marks a device revoked (keeping the first revocation time); `None` if unknown.
    async fn revoke_device(&self, device_id: &str, at: i64) -> Result<Option<DeviceEnrolment>, StoreError>;

    /// The device's progress; the default (nothing received) for a new device.
    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError>;

    /// The devices with records waiting behind a gap for conflict evaluation.
    async fn devices_waiting_for_evaluation(&self) -> Result<Vec<String>, StoreError>;

    /// What each of `seqs` holds, in the same order.
    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError>;

    /// Writes everything in `commit` atomically (embedded) or idempotently
    /// (ScyllaDB); returns once durable.
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// One UTC day of an employee's timeline, in `recorded_at` order: the records
    /// of that day, and the leave requests that cover it.
    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The UTC days in which an employee's timeline has entries, in order: one read
    /// that spares a conflict actor a read of every day it finds empty.
    async fn timeline_days(&self, org_id: &str, employee_id: &str) -> Result<Vec<UtcDay>, StoreError>;

    async fn conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError>;

    /// An org's conflicts in detection order, only open or only resolved ones if
    /// `open` says so, each with the cursor that continues after it.
    async fn conflicts(
        &self,
        org_id: &str,
        open: Option<bool>,
        page: Page<'_>,
    ) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError>;

    /// The conflicts a device's records take part in, open ones only.
    async fn open_conflicts_of_device(&self, device_id: &str) -> Result<Vec<ConflictRecord>, StoreError>;

    /// A device's audit trail (or, with `org_id`, the org's) between two times, oldest
    /// first, each entry with the cursor that continues after it.
    async fn audit(
        &self,
        scope: AuditScope<'_>,
        since: i64,
        until: i64,
        page: Page<'_>,
    ) -> Result<Vec<(AuditEvent, Cursor)>, StoreError>;

    /// The org's sync statistics summed over the UTC hours from `since` on.
    async fn sync_totals(&self, org_id: &str, since: i64) -> Result<SyncTotals, StoreError>;

    /// A device's sync statistics since enrolment.
    async fn device_totals(&self, device_id: &str) -> Result<SyncTotals, StoreError>;

    /// The devices enrolled in an org, in id order, after `page.after`.
    async fn devices_of_org(&self, org_id: &str, page: Page<'_>) -> Result<Vec<(DeviceEnrolment, Cursor)>, StoreError>;

    /// The org's settings; the defaults for an org that never set any.
    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError>;

    /// Replaces the org's settings, durably.
    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError>;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything durable and releases the store; later calls fail.
    async fn close(&self) -> Result<(), StoreError>;
}
