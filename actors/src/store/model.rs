//! What otg stores, independent of where: devices, seqs, the employee timeline,
//! conflicts, and the commit that writes them together.

use crate::conflict_rules::ConflictKind;
use crate::seq_ranges::SeqRanges;
use otg_schema::wire::RejectReason;
use otg_schema::{ConflictResolution, RecordKind, UtcDay, ValidRecord};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

impl DeviceEnrolment {
    /// An entry of this device's audit trail.
    pub fn audit(&self, at: i64, event: AuditKind) -> AuditEvent {
        AuditEvent { at, org_id: self.org_id.clone(), device_id: self.device_id.clone(), event }
    }
}

/// How far a device has synced: the seqs received and evaluated, and what it last
/// reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProgress {
    pub received: SeqRanges,
    /// Unix ms of the last batch acked to this device.
    pub last_sync_at: Option<i64>,
    /// The `pending` count the device reported with its last batch.
    pub reported_pending: Option<u64>,
    /// Conflict evaluation: every received seq below this was evaluated.
    #[serde(default)]
    pub evaluation: EvaluationProgress,
    /// The counts of the device's batches acked so far. They travel with the progress,
    /// the commit point, so each batch counts once and a device's totals are one read;
    /// the counts of refused batches, which no device commit carries, a store keeps
    /// apart (`Store::device_totals` adds both).
    #[serde(default)]
    pub totals: SyncTotals,
    /// What the device last said of its own health; kept until a batch says anything
    /// of it again, so a batch from an older app leaves it as it was.
    #[serde(default)]
    pub health: DeviceHealth,
    /// The commit that wrote this progress (`Commit::id`); `None` before any did. The
    /// next commit of the device names it as the one it follows (`DeviceWrite::after`),
    /// so a write that lands late can never put the progress back.
    #[serde(default)]
    pub last_commit: Option<CommitId>,
}

/// The identity of one commit: made afresh for every decision (a batch decided again
/// after a fence or a moved timeline is another commit), kept by every retry of the
/// same one. Each conditional write names it, so a retry recognises its own write
/// that landed before, where it would otherwise see a moved timeline or progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommitId(pub uuid::Uuid);

impl CommitId {
    pub fn fresh() -> Self {
        CommitId(uuid::Uuid::new_v4())
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A device's own report of its health (the batch's optional health fields), for
/// administrators to read against the org's storage limit and max offline days.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Bytes the device's queue takes in its storage.
    pub queue_bytes: Option<u64>,
    pub app_version: Option<String>,
    /// `recorded_at` of the oldest record still queued on the device, unix ms.
    pub oldest_pending_at: Option<i64>,
    /// Server time of the batch that reported it, unix ms.
    pub reported_at: Option<i64>,
}

/// Where conflict evaluation of a device's records stands. Records are evaluated in
/// seq order: those behind a gap wait for it to fill, or for the org's gap timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationProgress {
    /// Every received seq below this has been evaluated.
    pub evaluated_below: u64,
    /// Server time since when received records have waited behind a gap.
    pub waiting_since: Option<i64>,
}

impl Default for EvaluationProgress {
    fn default() -> Self {
        EvaluationProgress { evaluated_below: 1, waiting_since: None }
    }
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
// Nearly every entry is `Stored`: boxing it would cost an allocation per record on the
// ingest path to shrink the rare `Rejected`.
#[allow(clippy::large_enum_variant)]
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

/// Everything one step writes together: a device's batch outcome with the timeline
/// entries and conflicts it brings, or an administrator's resolution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// Its identity: the device's progress it writes and every employee version it
    /// advances are marked with it (`CommitId`).
    pub id: CommitId,
    pub device: Option<DeviceWrite>,
    /// The employees whose records this commit places, each with the timeline version
    /// its placement read: advanced first, and if one moved, nothing is written.
    pub employees: Vec<EmployeeAdvance>,
    /// New timeline entries, or stored ones with a new status.
    pub timeline: Vec<TimelineEntry>,
    /// Conflicts detected: written if absent. Writing one again never undoes its
    /// resolution, which only `Store::resolve_conflict` writes.
    pub conflicts: Vec<ConflictRecord>,
    pub audit: Vec<AuditEvent>,
    /// Counts to add to the org's hourly sync statistics and the device's totals.
    pub stats: Vec<SyncCounts>,
}

/// One entry of the audit trail, filed under a device and its org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: i64,
    pub org_id: String,
    pub device_id: String,
    pub event: AuditKind,
}

impl AuditEvent {
    /// What tells this entry apart from the device's others at the same millisecond: a
    /// write that is retried, by this gateway or another, files the same entry again,
    /// not a second one.
    ///
    /// A received batch is keyed by what identifies the upload (its arrival and its
    /// `batch_id`) and whether it was acked, not by what its acks say: a batch decided
    /// again (another gateway claimed its device, or an employee's timeline moved under
    /// it) writes its entry and counts over those of the run before, which stand in the
    /// store without a commit point. A refusal of the same upload is another entry: a
    /// commit whose outcome the store could not tell (a timed-out conditional write
    /// that did land) may still count, and its counts must not be overwritten by the
    /// 503 that followed. Any other entry is keyed by its whole encoding: two entries
    /// alike in every field are one event.
    pub fn key(&self) -> u64 {
        const AUDIT_NAMESPACE: uuid::Uuid = uuid::uuid!("0b6f3a52-2f1e-4c8e-9d57-5a3c9e1f7d40");
        let name = match &self.event {
            AuditKind::BatchReceived { batch_id, http_status, .. } => super::codec::encode(&(
                "batch_received",
                self.at,
                &self.org_id,
                &self.device_id,
                batch_id,
                *http_status == 200,
            )),
            _ => super::codec::encode(self),
        };
        uuid::Uuid::new_v5(&AUDIT_NAMESPACE, &name).as_u64_pair().0
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditKind {
    /// A batch was received; `outcome` is `ok` or the error code it was answered with.
    BatchReceived {
        batch_id: Option<String>,
        outcome: String,
        http_status: u16,
        latency_ms: u64,
        records: u32,
        acks: Vec<AuditAck>,
    },
    DeviceEnrolled {
        employee_id: Option<String>,
    },
    DeviceRevoked,
    ConflictResolved {
        conflict_id: String,
        resolution: Resolution,
        note: String,
    },
}

/// One record's ack, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditAck {
    pub seq: i64,
    pub status: otg_schema::wire::AckStatus,
    pub reason: Option<RejectReason>,
    pub conflict_id: Option<String>,
}

/// Counts of one batch (or one failed request) for the sync statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncTotals {
    pub batches_succeeded: u64,
    pub batches_failed: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub rejected: u64,
}

impl SyncTotals {
    pub fn add(&mut self, other: &SyncTotals) {
        self.batches_succeeded += other.batches_succeeded;
        self.batches_failed += other.batches_failed;
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.conflict += other.conflict;
        self.rejected += other.rejected;
    }
}

/// One event's counts (a batch acked or refused) for its org's hour and its device.
/// Counts of one (device, key) are counted once however often they are written, so a
/// commit retried after a timeout never counts twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub org_id: String,
    pub device_id: String,
    /// Unix ms of the event; counted in its UTC hour.
    pub at: i64,
    /// The event's audit entry key (`AuditEvent::key`).
    pub key: u64,
    pub totals: SyncTotals,
}

impl SyncCounts {
    /// The counts of the event its audit entry records.
    pub fn of(event: &AuditEvent, totals: SyncTotals) -> Self {
        SyncCounts {
            org_id: event.org_id.clone(),
            device_id: event.device_id.clone(),
            at: event.at,
            key: event.key(),
            totals,
        }
    }
}

impl Commit {
    /// A device's seqs and progress with the timeline entries of its stored records,
    /// all active: what a device commit writes when no conflict is involved.
    pub fn of_device(mut device: DeviceWrite) -> Self {
        let id = CommitId::fresh();
        device.progress.last_commit = Some(id);
        let device_id: Arc<str> = device.device_id.as_str().into();
        let mut org_id: Option<Arc<str>> = None;
        let timeline = device
            .entries
            .iter()
            .filter_map(|entry| match entry {
                SeqEntry::Stored(stored) => {
                    let org_id = org_id.get_or_insert_with(|| stored.org_id.as_str().into());
                    Some(TimelineEntry::of(stored, org_id, &device_id, RecordStatus::Active))
                }
                SeqEntry::Rejected { .. } => None,
            })
            .collect();
        Commit { id, device: Some(device), timeline, ..Commit::default() }
    }
}

/// How many buckets the devices with records waiting behind a gap are kept in. Gateways
/// own whole buckets (`waiting_bucket`), so a change of the live gateways moves some
/// buckets, and each gateway reads only the buckets it newly owns.
pub const WAITING_BUCKETS: u16 = 256;

/// The bucket of a device's waiting-for-evaluation entry: the same on every gateway and
/// every build (CRC-32 of the id, not the process's hasher).
pub fn waiting_bucket(device_id: &str) -> u16 {
    (crc32fast::hash(device_id.as_bytes()) % u32::from(WAITING_BUCKETS)) as u16
}

/// A device's newly received seqs and its progress after them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWrite {
    pub device_id: String,
    /// Newly received seqs only; resends and reused seqs write nothing.
    pub entries: Vec<SeqEntry>,
    /// The progress after this commit; its `last_commit` is the commit's id.
    pub progress: DeviceProgress,
    /// The epoch the committer claimed the device under (`Store::claim_device`).
    pub epoch: i64,
    /// The commit whose progress this one follows (the `last_commit` its claim or its
    /// previous commit left): the progress is written only if it still is.
    pub after: Option<CommitId>,
    /// Whether that progress had records waiting behind a gap: a commit that ends the
    /// wait takes the device out of the waiting devices.
    pub was_waiting: bool,
}

/// A device claimed by the caller: the epoch its commits are made under, and its
/// progress as of the claim.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceClaim {
    pub epoch: i64,
    pub progress: DeviceProgress,
}

/// A gateway process sharing the store with others: its id (fresh at every start) and
/// when it started, unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayMember {
    pub gateway_id: String,
    pub started_at: i64,
}

/// An employee whose timeline a commit changes, the version the change was decided on
/// (`Store::employee_version`) and the one the commit advances it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmployeeAdvance {
    pub org_id: String,
    pub employee_id: String,
    pub read_version: i64,
    /// `EmployeeAdvance::next_version` of `read_version`.
    pub new_version: i64,
}

impl EmployeeAdvance {
    /// The version after `read`: the greater of one past it and the clock in
    /// microseconds. It is greater than the version it follows whatever the clock says,
    /// so an employee's versions order its decisions, never a gateway's clock; and it
    /// is never behind the clock, so a store may write a decision's timeline rows with
    /// its version as their timestamp (ScyllaDB does): a later decision's rows win over
    /// an earlier one's on any gateway, and over rows written before versions were
    /// timestamps.
    pub fn next_version(read: i64, now_micros: i64) -> i64 {
        read.saturating_add(1).max(now_micros)
    }

    /// The advance of an employee from `read_version`, to the version after it now.
    pub fn next(org_id: &str, employee_id: &str, read_version: i64) -> Self {
        let now_micros = chrono::Utc::now().timestamp_micros();
        EmployeeAdvance {
            org_id: org_id.to_string(),
            employee_id: employee_id.to_string(),
            read_version,
            new_version: Self::next_version(read_version, now_micros),
        }
    }
}

/// Whether a stored record counts in the effective timeline. Nothing is ever deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    Active,
    /// Stored, and waiting behind a gap in its device's seqs for conflict evaluation:
    /// no rule counts it yet.
    Pending,
    /// Kept, but another record of its conflict stands instead.
    Superseded,
    /// Kept, but an administrator discarded it.
    Discarded,
}

/// A record's place in its employee's timeline, ordered by `recorded_at`. Its ids are
/// shared: conflict actors copy entries into every cached day and decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub org_id: Arc<str>,
    pub employee_id: Arc<str>,
    pub recorded_at: i64,
    pub device_id: Arc<str>,
    pub seq: u64,
    pub record_id: Arc<str>,
    pub kind: RecordKind,
    /// The days a leave request covers, both inclusive.
    pub leave: Option<(UtcDay, UtcDay)>,
    pub status: RecordStatus,
}

impl TimelineEntry {
    /// The entry of a stored record; `org_id` and `device_id` are its own, shared by
    /// the caller across the device's batch.
    pub fn of(stored: &StoredRecord, org_id: &Arc<str>, device_id: &Arc<str>, status: RecordStatus) -> Self {
        let record = &stored.record;
        TimelineEntry {
            org_id: org_id.clone(),
            employee_id: record.employee_id.as_str().into(),
            recorded_at: record.recorded_at,
            device_id: device_id.clone(),
            seq: record.seq,
            record_id: record.record_id.as_str().into(),
            kind: record.kind,
            leave: record.leave.as_ref().map(|leave| (leave.from, leave.to)),
            status,
        }
    }

    /// The partitions the entry is written to, with its clustering time in each: its
    /// own day at `recorded_at`, and for a leave request also every day it covers.
    pub fn positions(&self) -> Vec<(UtcDay, i64)> {
        let mut positions = vec![(UtcDay::of_unix_ms(self.recorded_at), self.recorded_at)];
        if let Some((from, to)) = self.leave {
            positions.extend(from.through(to).map(|day| (day, day.start_unix_ms())));
        }
        positions
    }

    pub fn reference(&self) -> RecordRef {
        RecordRef {
            record_id: self.record_id.to_string(),
            device_id: self.device_id.to_string(),
            seq: self.seq,
            recorded_at: self.recorded_at,
            kind: self.kind,
        }
    }
}

/// Where a record of a conflict is stored, enough to find its timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub record_id: String,
    pub device_id: String,
    pub seq: u64,
    pub recorded_at: i64,
    pub kind: RecordKind,
}

/// What the org's policy did when the conflict was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// `server_wins`: the record stored first stands, the newcomer is superseded.
    NewcomerSuperseded,
    /// `device_wins`: the newcomer stands, the record stored first is superseded.
    ServerSuperseded,
    /// `manual`, or a conflict of one record: both stand until an administrator decides.
    BothStand,
}

/// An administrator's decision on a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    KeepServer,
    KeepDevice,
    KeepBoth,
    DiscardBoth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResolution {
    pub resolution: Resolution,
    pub note: String,
    pub resolved_at: i64,
}

impl AdminResolution {
    /// Whether `other` decides the same (whenever it was made): a retried decision.
    pub fn same_decision(&self, other: &AdminResolution) -> bool {
        self.resolution == other.resolution && self.note == other.note
    }
}

/// A conflict: its kind, the newcomer (`device_record`), the record stored before it
/// (`server_record`, for conflicts between two), and what has been decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    #[serde(rename = "conflict_id")]
    pub id: String,
    pub org_id: String,
    pub employee_id: String,
    pub kind: ConflictKind,
    pub device_record: RecordRef,
    pub server_record: Option<RecordRef>,
    pub policy: ConflictResolution,
    pub outcome: PolicyOutcome,
    pub detected_at: i64,
    pub resolution: Option<AdminResolution>,
}

/// What became of an administrator's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// The decision stands; the conflict as resolved.
    Now(ConflictRecord),
    /// Another decision was there first; the conflict as it stands.
    Already(ConflictRecord),
    NotFound,
}

impl ConflictRecord {
    /// The devices whose records take part in it, each once.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        let device = self.device_record.device_id.as_str();
        let other =
            self.server_record.as_ref().map(|record| record.device_id.as_str()).filter(|other| *other != device);
        std::iter::once(device).chain(other)
    }

    pub fn is_open(&self) -> bool {
        self.resolution.is_none()
    }

    /// The audit entries of the decision that stands on this conflict, one per device
    /// whose record takes part in it, at the time the decision was first made: a retry
    /// of the decision (made later, answered as the first was) files the same entries
    /// again, under the same keys, never a second set.
    pub fn resolution_audit(&self) -> Vec<AuditEvent> {
        let Some(standing) = &self.resolution else { return Vec::new() };
        self.device_ids()
            .map(|device_id| AuditEvent {
                at: standing.resolved_at,
                org_id: self.org_id.clone(),
                device_id: device_id.to_string(),
                event: AuditKind::ConflictResolved {
                    conflict_id: self.id.clone(),
                    resolution: standing.resolution,
                    note: standing.note.clone(),
                },
            })
            .collect()
    }
}

/// Where a list continues: the opaque position after an item.
pub type Cursor = Vec<u8>;

/// Which part of a list to read: up to `limit` items after `after`.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a [u8]>,
    pub limit: usize,
}

/// Whose audit trail to read.
#[derive(Debug, Clone, Copy)]
pub enum AuditScope<'a> {
    Device(&'a str),
    Org(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};

    /// The progress as it was stored before devices reported their health.
    #[derive(Serialize)]
    struct ProgressWithoutHealth {
        received: SeqRanges,
        last_sync_at: Option<i64>,
        reported_pending: Option<u64>,
        evaluation: EvaluationProgress,
        totals: SyncTotals,
    }

    #[test]
    fn progress_stored_before_health_was_reported_still_reads() {
        let mut received = SeqRanges::default();
        received.insert(1);
        let old = ProgressWithoutHealth {
            received: received.clone(),
            last_sync_at: Some(5),
            reported_pending: Some(2),
            evaluation: EvaluationProgress::default(),
            totals: SyncTotals::default(),
        };
        let progress: DeviceProgress = decode(&encode(&old)).unwrap();
        assert_eq!(progress.received, received);
        assert_eq!(progress.health, DeviceHealth::default());
    }
}
