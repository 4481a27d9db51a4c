//! The `Store` trait: what otg keeps, in the time-bucketed model ScyllaDB stores natively.
//!
//! Records are keyed by (device, seq), which makes every write idempotent, and listed
//! by (org, employee, UTC day) ordered by time, which is what conflict detection reads.
//! Nothing above this trait knows which store it talks to; both pass `conformance`.
//!
//! The contract holds for a store that is not atomic across partitions (ScyllaDB):
//! - **A commit has one commit point: its device's progress.** Its rows (seqs,
//!   timeline, conflicts) land first, in any order; only once each is durable is the
//!   progress written. A gateway that dies in between has acked nothing: the device
//!   sends the batch again, its seqs are not in the progress, so they are decided anew
//!   and every row is written again to the same key. So readers take the progress as
//!   the truth of what a device has sent, and tolerate rows that a cut commit left: a
//!   seq row that the progress does not cover is not received; a timeline entry of a
//!   record being placed again is that record (evaluation skips its own record id); a
//!   conflict detected again gets the same id.
//! - **Audit entries and statistics count only commits that took effect.** A resent
//!   batch is another upload, filed and counted under its own time, so a cut commit's
//!   entries would count its records twice: a device commit's entries and counts are
//!   written after its commit point, and `commit` returns once they are durable. A
//!   store that is not atomic keeps them with the progress until they are, and a claim
//!   of the device writes them again.
//! - **Writing again changes nothing.** Every row is keyed from its data: seqs by
//!   (device, seq), audit entries by (device or org, time, `AuditEvent::key`),
//!   statistics by the key of the event they count, conflicts by an id derived from
//!   their kind and records.
//! - **Where two writers race for one outcome, one wins** (a conditional write):
//!   enrolment, revocation and a conflict's resolution.

mod codec;
mod embedded;
mod keys;
mod model;
mod scylladb;
mod tolerant;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// The consistency levels the ScyllaDB store can be configured with.
pub use ::scylla::statement::Consistency;
pub use embedded::{EmbeddedStore, EmbeddedStoreOptions};
pub use model::*;
pub use scylladb::{migrate as migrate_scylla, valid_keyspace, Replication, ScyllaStore, ScyllaStoreOptions};

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
    /// The device was claimed under a newer epoch (by another gateway): this commit
    /// wrote no progress; the caller claims the device again and decides afresh.
    #[error("fenced: {0}")]
    Fenced(String),
    /// An employee's timeline changed since the placement read it (another gateway
    /// placed records of the employee): nothing of this commit was written; the
    /// caller places again on a fresh read.
    #[error("the timeline of {0} moved")]
    TimelineMoved(String),
}

/// Where a test cuts a commit between two of its writes, as a dying node or gateway
/// would: every write of both stores passes here first (the fail point `store::write`,
/// which fires in test builds only; `conformance::commits_cut_between_any_two_writes`).
pub(crate) fn write_point() -> Result<(), StoreError> {
    fail::fail_point!("store::write", |_| Err(StoreError::Unavailable(
        "injected: the store failed before this write".into()
    )));
    Ok(())
}

/// Where otg keeps everything. Writes return only once durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Enrols a device if its id was never enrolled, and files the `DeviceEnrolled`
    /// audit entry with it; `AlreadyExists` if another enrolment holds the id. Enrolling
    /// the very same enrolment again (a retry) succeeds and completes its audit entry.
    async fn enrol_device(&self, enrolment: &DeviceEnrolment) -> Result<(), StoreError>;

    async fn device(&self, device_id: &str) -> Result<Option<DeviceEnrolment>, StoreError>;

    /// Marks a device revoked if it is not yet (the first revocation time stands), and
    /// files one `DeviceRevoked` audit entry at that time however often it is called;
    /// `None` if the device is unknown.
    async fn revoke_device(&self, device_id: &str, at: i64) -> Result<Option<DeviceEnrolment>, StoreError>;

    /// The device's progress; the default (nothing received) for a new device.
    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError>;

    /// Takes the device for the caller under a new epoch, greater than every earlier
    /// one, and returns it with the device's progress as of then: every commit of an
    /// earlier epoch that returned is in it (with its audit entries and statistics, even
    /// if its gateway died before it returned), and from now on commits under an earlier
    /// epoch fail with `Fenced` and write no progress (a conditional write where
    /// several gateways share the store).
    async fn claim_device(&self, device_id: &str) -> Result<DeviceClaim, StoreError>;

    /// An employee's timeline version (0 for one never placed; a store that forgets
    /// may read higher, never lower): a commit that places records of the employee, or
    /// resolves one of its conflicts, advances it from the version its placement read
    /// to `EmployeeAdvance::new_version`, after writing their rows, and fails with
    /// `TimelineMoved`, writing no progress, if it moved meanwhile. Versions order an
    /// employee's decisions: of two writes of one record's entry, the one of the higher
    /// version stands, whichever gateway's clock ran ahead. Read the version before the
    /// timeline: every commit that advanced to it is then in what is read. A conflict
    /// actor's cache takes its own commits' versions on from the version it read, and
    /// reads the timeline again once that is not the store's.
    async fn employee_version(&self, org_id: &str, employee_id: &str) -> Result<i64, StoreError>;

    /// The devices with records waiting behind a gap for conflict evaluation whose
    /// bucket (`waiting_bucket`) is one of `buckets`: a gateway reads the buckets it
    /// owns when it starts, and after a change of the live gateways only those it newly
    /// owns, so the cost of a change follows what changed. A device may be listed that
    /// no longer waits (its wake-up then finds nothing due); none that waits is left out.
    async fn devices_waiting(&self, buckets: &[u16]) -> Result<Vec<String>, StoreError>;

    /// What each of `seqs` holds, in the same order.
    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError>;

    /// Writes everything in `commit`: its rows, its device's progress (the commit
    /// point), then its audit entries and statistics; returns once all of it is
    /// durable. The progress is written only if the device is still held under the
    /// write's epoch and its progress is still that of `DeviceWrite::after` (else
    /// `Fenced`); each employee's version only from the version its placement read
    /// (else `TimelineMoved`). Progress and versions are marked with `commit.id`, and
    /// one already marked with it is this commit's own earlier write: calling it again
    /// with the same commit, after an error or not, changes nothing that the first call
    /// wrote, and a commit that lands after the one that followed it writes no progress.
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// Records an administrator's decision on a conflict if the conflict is still open
    /// (of two racing decisions one wins), then writes `effects` (the records' new
    /// statuses) and the decision's audit entries (`ConflictRecord::resolution_audit`
    /// of the decision that stands). A decision equal to the one that stands (the same
    /// resolution and note: a retry) writes its effects again and counts as won; its
    /// audit entries are those of the standing decision, so a decision is filed once
    /// however often it is retried.
    async fn resolve_conflict(
        &self,
        conflict_id: &str,
        resolution: &AdminResolution,
        effects: &Commit,
    ) -> Result<Resolved, StoreError>;

    /// One UTC day of an employee's timeline, in `recorded_at` order: the records
    /// of that day, and the leave requests that cover it.
    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The UTC days from `days.0` to `days.1` (both included) in which an employee's
    /// timeline has entries, in order: one read that spares a conflict actor a read of
    /// every day it finds empty.
    async fn timeline_days(
        &self,
        org_id: &str,
        employee_id: &str,
        days: (UtcDay, UtcDay),
    ) -> Result<Vec<UtcDay>, StoreError>;

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

    /// A device's sync statistics since enrolment: its progress's totals (batches
    /// acked) and the counts of its refused batches (commits without a device write).
    async fn device_totals(&self, device_id: &str) -> Result<SyncTotals, StoreError>;

    /// The devices enrolled in an org, in id order, after `page.after`.
    async fn devices_of_org(&self, org_id: &str, page: Page<'_>) -> Result<Vec<(DeviceEnrolment, Cursor)>, StoreError>;

    /// The org's settings; the defaults for an org that never set any.
    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError>;

    /// Replaces the org's settings, durably.
    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError>;

    /// Writes that this gateway is alive, until `ttl` from now unless written again.
    async fn heartbeat(&self, gateway: &GatewayMember, ttl: std::time::Duration) -> Result<(), StoreError>;

    /// The gateways whose last heartbeat has not expired, in id order.
    async fn live_gateways(&self) -> Result<Vec<GatewayMember>, StoreError>;

    /// Removes this gateway from the live ones at once (it is shutting down).
    async fn leave(&self, gateway_id: &str) -> Result<(), StoreError>;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything durable and releases the store; later calls fail.
    async fn close(&self) -> Result<(), StoreError>;
}
