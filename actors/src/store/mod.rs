//! The `Store` trait: what otg keeps, in the time-bucketed model ScyllaDB stores natively.
//!
//! Records are keyed by (device, seq), which makes every write idempotent, and listed
//! by (org, employee, UTC day) ordered by time, which is what conflict detection reads.
//! Nothing above this trait knows which store it talks to; both pass `conformance`.

mod embedded;
mod keys;

#[cfg(test)]
pub(crate) mod conformance;

pub use embedded::{EmbeddedStore, EmbeddedStoreOptions};

use crate::seq_ranges::SeqRanges;
use async_trait::async_trait;
use otg_schema::wire::RejectReason;
use otg_schema::{OrgSettings, RecordKind, UtcDay, ValidRecord};
use serde::{Deserialize, Serialize};

/// Why a store call failed. Every variant but `AlreadyExists` is transient to the
/// caller: nothing was acked, so the device keeps its records and retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// An enrolled device and the secret its requests are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEnrolment {
    pub device_id: String,
    pub org_id: String,
    /// `None` for a shared kiosk that records for any employee of its org.
    pub employee_id: Option<String>,
    pub secret: [u8; 32],
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
}

/// How far a device has synced: the seqs received and what it last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProgress {
    pub received: SeqRanges,
    /// Unix ms of the last batch acked to this device.
    pub last_sync_at: Option<i64>,
    /// The `pending` count the device reported with its last batch.
    pub reported_pending: Option<u64>,
}

/// A record as stored, with where and when it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub device_id: String,
    pub org_id: String,
    pub batch_id: String,
    /// Server clock at receipt, unix ms.
    pub received_at: i64,
    pub record: ValidRecord,
}

/// What a (device, seq) slot holds once received: the record, or why it was refused.
/// A refused seq is kept too, so it leaves no gap and a resend gets the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SeqEntry {
    Stored(StoredRecord),
    Rejected { seq: u64, record_id: String, reason: RejectReason, detail: Option<String> },
}

impl SeqEntry {
    pub fn seq(&self) -> u64 {
        match self {
            SeqEntry::Stored(stored) => stored.record.seq,
            SeqEntry::Rejected { seq, .. } => *seq,
        }
    }

    pub fn record_id(&self) -> &str {
        match self {
            SeqEntry::Stored(stored) => &stored.record.record_id,
            SeqEntry::Rejected { record_id, .. } => record_id,
        }
    }
}

/// One device's batch outcome, written atomically (embedded) or idempotently (ScyllaDB).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCommit {
    pub device_id: String,
    /// Newly received seqs only; resends and reused seqs write nothing.
    pub entries: Vec<SeqEntry>,
    pub progress: DeviceProgress,
}

/// A record's place in its employee's timeline, ordered by `recorded_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub recorded_at: i64,
    pub device_id: String,
    pub seq: u64,
    pub record_id: String,
    pub kind: RecordKind,
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

    /// What each of `seqs` holds, in the same order.
    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError>;

    /// Writes a device's new entries and progress; returns once durable.
    async fn commit(&self, commit: DeviceCommit) -> Result<(), StoreError>;

    /// One UTC day of an employee's timeline, in `recorded_at` order.
    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The org's settings; the defaults for an org that never set any.
    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError>;

    /// Replaces the org's settings, durably.
    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError>;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything durable and releases the store; later calls fail.
    async fn close(&self) -> Result<(), StoreError>;
}
