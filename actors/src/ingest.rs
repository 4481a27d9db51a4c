//! The ingest pipeline: one device's batch through dedupe, ordering, placement in its
//! employees' timelines, the durable commit and the acks. Plain code with no actor in
//! it: the `DeviceActor` runs it one batch at a time and keeps the device's progress
//! between batches; the pipeline only needs the store and the conflict shards.
//!
//! Its invariant: a batch's acks are returned only after `Store::commit` said durable,
//! and they are all of its records' acks or none.

use crate::conflict_actor::EmployeeRecords;
use crate::conflict_shards::ConflictShards;
use crate::dedupe::{self, Incoming, RecordDecision};
use crate::employee_timeline::{EmployeePlaced, Placed, ToPlace};
use crate::evaluation::{self, EvaluationPlan};
use crate::retry::{self, RetryPolicy};
use crate::seq_ranges::SeqRanges;
use crate::store::{
    AuditAck, AuditEvent, AuditKind, Commit, CommitId, ConflictRecord, DeviceClaim, DeviceHealth, DeviceProgress,
    DeviceWrite, EmployeeAdvance, RecordStatus, SeqEntry, Store, StoreError, StoredRecord, SyncCounts, SyncTotals,
    TimelineEntry,
};
use otg_schema::wire::{Ack, AckStatus, RejectReason};
use otg_schema::OrgSettings;
use prometheus::{IntCounter, IntCounterVec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One checked batch of a device, as the gateway hands it over.
#[derive(Debug)]
pub struct Upload {
    pub org_id: String,
    pub batch_id: String,
    /// Server clock at receipt, unix ms.
    pub received_at: i64,
    pub reported_pending: Option<u64>,
    /// What the batch said of the device's health; `None` when it said nothing of it.
    pub reported_health: Option<DeviceHealth>,
    pub records: Vec<Incoming>,
    /// The org's settings when the batch arrived.
    pub settings: OrgSettings,
    /// A live batch (recent records): committed ahead of backlog.
    pub live: bool,
}

/// The acks of a durable batch, in the order of its records, and where its time went.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub acks: Vec<Ack>,
    pub next_seq: u64,
    pub stages: Stages,
}

/// Where a batch's time inside the actors went: what the gateway's stage metrics and its
/// slow-batch log are made of, so a stall can be laid at one stage's door.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// In its device actor's mailbox, behind the device's earlier batches.
    pub queued: Duration,
    /// The device's claim, dedupe's reads and the placement in the employees'
    /// timelines (waiting at the conflict actors included), and any run decided again.
    pub placement: Duration,
    /// The durable write, until the store said durable: the live log's write or the
    /// group commit's fsync on the embedded store, the quorum's answer on ScyllaDB.
    pub commit: Duration,
}

/// Runs of one batch, at most: each after another gateway claimed the device or an
/// employee's timeline moved under the batch's placement.
const OWNED_ATTEMPTS: u32 = 6;
/// The wait before the second run; it doubles with each run after, and each is spread
/// by jitter, so gateways racing for one device or employee fall out of step.
const OWNED_BACKOFF: Duration = Duration::from_millis(20);

/// What the pipeline works with, the same for every device: handed to each device
/// actor when it is built.
pub(crate) struct IngestServices {
    pub store: Arc<dyn Store>,
    /// `None` when conflict detection is off.
    pub conflicts: Option<Arc<ConflictShards>>,
    /// How a commit is retried when the store fails transiently, and the retry counter.
    pub store_retry: RetryPolicy,
    pub store_retries: IntCounter,
    /// `otg_device_ownership_events_total`, by `OwnershipEvent`.
    pub ownership: IntCounterVec,
}

/// What happened to a device's ownership during a batch: what the scale-out benchmark
/// reads to see how often gateways contend for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnershipEvent {
    Claimed,
    Fenced,
    TimelineMoved,
}

impl OwnershipEvent {
    pub(crate) const ALL: [OwnershipEvent; 3] =
        [OwnershipEvent::Claimed, OwnershipEvent::Fenced, OwnershipEvent::TimelineMoved];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OwnershipEvent::Claimed => "claimed",
            OwnershipEvent::Fenced => "fenced",
            OwnershipEvent::TimelineMoved => "timeline_moved",
        }
    }
}

/// One batch on its way through dedupe, the durable write and the acks. A run without
/// records evaluates the records a gap timeout released.
pub(crate) struct Ingest {
    pub device_id: Arc<str>,
    pub org_id: Arc<str>,
    pub batch_id: String,
    pub received_at: i64,
    pub reported_pending: Option<u64>,
    pub reported_health: Option<DeviceHealth>,
    pub settings: OrgSettings,
    pub live: bool,
}

/// What placing a batch's records in their employees' timelines decided.
#[derive(Default)]
struct Placement {
    timeline: Vec<TimelineEntry>,
    conflicts: Vec<ConflictRecord>,
    /// The first conflict of each record (by seq) that has one.
    conflict_of: HashMap<u64, String>,
    /// One per conflict actor that placed records: says whether the commit succeeded.
    commit_signals: Vec<oneshot::Sender<bool>>,
    /// The employees placed, with the timeline version each placement read.
    employees: Vec<EmployeeAdvance>,
}

impl IngestServices {
    fn count(&self, event: OwnershipEvent) {
        self.ownership.with_label_values(&[event.as_str()]).inc();
    }
}

impl Ingest {
    /// Runs the batch for a device this process holds: under `claim`, or one made now.
    /// When another gateway claimed the device meanwhile (`Fenced`), the batch is
    /// decided again from a fresh claim; when an employee's timeline moved under its
    /// placement (`TimelineMoved`), it is placed again on fresh reads. Neither wrote a
    /// progress, so nothing was acked. Returns the outcome and the claim after the
    /// commit.
    pub(crate) async fn run_owned(
        &self,
        services: &IngestServices,
        mut claim: Option<DeviceClaim>,
        records: Vec<Incoming>,
    ) -> Result<(BatchOutcome, DeviceClaim), StoreError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let current = match claim.take() {
                Some(claim) => claim,
                None => {
                    let claimed = services.store.claim_device(&self.device_id).await?;
                    services.count(OwnershipEvent::Claimed);
                    claimed
                }
            };
            let epoch = current.epoch;
            match self.run(services, current.clone(), records.clone()).await {
                Ok((mut outcome, progress)) => {
                    outcome.stages.placement = started.elapsed().saturating_sub(outcome.stages.commit);
                    return Ok((outcome, DeviceClaim { epoch, progress }));
                }
                Err(StoreError::Fenced(_)) if attempt < OWNED_ATTEMPTS => services.count(OwnershipEvent::Fenced),
                Err(StoreError::TimelineMoved(_)) if attempt < OWNED_ATTEMPTS => {
                    services.count(OwnershipEvent::TimelineMoved);
                    claim = Some(current)
                }
                Err(error) => return Err(error),
            }
            let jitter = 0.5 + rand::random::<f64>();
            tokio::time::sleep(OWNED_BACKOFF.mul_f64(f64::from(1u32 << (attempt - 1)) * jitter)).await;
            attempt += 1;
        }
    }

    /// Decides, places and commits the batch's `records` against the device's progress
    /// as `claim` has it; returns the acks and the device's progress after the commit.
    async fn run(
        &self,
        services: &IngestServices,
        claim: DeviceClaim,
        records: Vec<Incoming>,
    ) -> Result<(BatchOutcome, DeviceProgress), StoreError> {
        let DeviceClaim { epoch, progress } = claim;
        // This run's decision is a commit of its own; a retry of its write keeps it.
        let (id, after) = (CommitId::fresh(), progress.last_commit);
        let was_waiting = progress.evaluation.waiting_since.is_some();
        let (store, conflicts) = (services.store.as_ref(), services.conflicts.as_deref());
        let lookups = dedupe::seqs_to_look_up(&progress.received, &records);
        let previously: HashMap<u64, SeqEntry> = if lookups.is_empty() {
            HashMap::new()
        } else {
            let entries = self.received_entries(store, &lookups).await?;
            lookups.into_iter().zip(entries).collect()
        };
        let (decisions, received) = dedupe::decide(&progress.received, &records, &previously);

        let mut acks = Vec::with_capacity(records.len());
        let mut entries = Vec::new();
        for (record, decision) in records.into_iter().zip(decisions) {
            let (ack, entry) = self.carry_out(record, decision);
            acks.push(ack);
            entries.extend(entry);
        }

        // Conflict evaluation slots in between "ordered" and "acked".
        let gap_timeout_ms = i64::from(self.settings.gap_timeout_s) * 1000;
        let plan = evaluation::plan(progress.evaluation, &received, self.received_at, gap_timeout_ms);
        let placement = self.place(store, conflicts, &entries, &progress.received, &plan).await?;
        // An `accepted` ack is for a seq this batch filled, so its seq finds its conflict.
        for ack in acks.iter_mut().filter(|ack| ack.status == AckStatus::Accepted) {
            if let Some(conflict_id) = placement.conflict_of.get(&(ack.seq as u64)) {
                ack.status = AckStatus::Conflict;
                ack.conflict_id = Some(conflict_id.clone());
            }
        }

        let is_batch = !acks.is_empty();
        // A run without records (records released by the gap timeout) is no batch.
        let (audit, stats) = if is_batch { self.audit_and_stats(&acks) } else { (vec![], vec![]) };
        let mut totals = progress.totals;
        for counts in &stats {
            totals.add(&counts.totals);
        }
        let progress = DeviceProgress {
            received,
            last_sync_at: if is_batch { Some(self.received_at) } else { progress.last_sync_at },
            reported_pending: self.reported_pending.or(progress.reported_pending),
            evaluation: plan.after,
            totals,
            health: self.reported_health.clone().unwrap_or(progress.health),
            last_commit: Some(id),
        };
        let next_seq = progress.received.next_seq();
        let commit = Commit {
            id,
            device: Some(DeviceWrite {
                device_id: self.device_id.to_string(),
                entries,
                progress: progress.clone(),
                epoch,
                after,
                was_waiting,
            }),
            employees: placement.employees,
            timeline: placement.timeline,
            conflicts: placement.conflicts,
            audit,
            stats,
        };
        let found: Vec<_> = commit
            .conflicts
            .iter()
            .filter(|conflict| conflict.detected_at == self.received_at)
            .map(|conflict| conflict.kind)
            .collect();
        fail::fail_point!("ingest::before_commit");
        let commit_started = Instant::now();
        let committed = retry::retrying(&services.store_retry, &services.store_retries, || store.commit(&commit)).await;
        let stages = Stages { commit: commit_started.elapsed(), ..Stages::default() };
        // The conflict actors waiting on this commit keep or drop what they cached.
        for commit_known in placement.commit_signals {
            let _ = commit_known.send(committed.is_ok());
        }
        committed?;
        if let Some(conflicts) = conflicts {
            for kind in found {
                conflicts.count_detected(kind);
            }
        }
        Ok((BatchOutcome { acks, next_seq, stages }, progress))
    }

    /// Places this batch's stored records, and earlier ones a filled gap releases, in
    /// their employees' timelines, evaluating those whose turn it is.
    async fn place(
        &self,
        store: &dyn Store,
        conflicts: Option<&ConflictShards>,
        entries: &[SeqEntry],
        received_before: &SeqRanges,
        plan: &EvaluationPlan,
    ) -> Result<Placement, StoreError> {
        let released: Vec<u64> = received_before.received_in(plan.released()).collect();
        let earlier = if released.is_empty() { Vec::new() } else { self.received_entries(store, &released).await? };
        let mut records: Vec<ToPlace> = earlier
            .iter()
            .chain(entries)
            .filter_map(|entry| match entry {
                SeqEntry::Stored(stored) => Some(ToPlace {
                    entry: TimelineEntry::of(stored, &self.org_id, &self.device_id, RecordStatus::Pending),
                    evaluate_now: plan.evaluates(stored.record.seq),
                }),
                SeqEntry::Rejected { .. } => None,
            })
            .collect();
        let Some(conflicts) = conflicts.filter(|_| !records.is_empty()) else {
            // Conflict detection is off: the records go into the timeline as they are.
            let timeline = records
                .into_iter()
                .map(|to_place| TimelineEntry { status: RecordStatus::Active, ..to_place.entry })
                .collect();
            return Ok(Placement { timeline, ..Placement::default() });
        };
        // Each employee is held until this commit is known; the conflict actors are
        // asked in one order, so two devices sharing employees never wait on each other.
        // Each employee gets its records in seq order.
        records.sort_by(|a, b| (&a.entry.employee_id, a.entry.seq).cmp(&(&b.entry.employee_id, b.entry.seq)));
        let mut employees: Vec<EmployeeRecords> = Vec::new();
        for to_place in records {
            match employees.last_mut() {
                Some(last) if last.employee.1 == to_place.entry.employee_id => last.records.push(to_place),
                _ => employees.push(EmployeeRecords {
                    employee: (self.org_id.clone(), to_place.entry.employee_id.clone()),
                    records: vec![to_place],
                }),
            }
        }
        let (placed, commit_signals) = conflicts.place(employees, self.received_at, &self.settings, self.live).await?;
        let mut placement = Placement { commit_signals, ..Placement::default() };
        let mut all_placed = Vec::new();
        for (_, EmployeePlaced { placed, advance }) in placed {
            placement.employees.push(advance);
            all_placed.extend(placed);
        }
        for Placed { entry, superseded, conflicts } in all_placed {
            if let Some(first) = conflicts.first() {
                placement.conflict_of.insert(entry.seq, first.id.clone());
            }
            placement.timeline.push(entry);
            placement.timeline.extend(superseded);
            placement.conflicts.extend(conflicts);
        }
        Ok(placement)
    }

    /// What each of `seqs`, all received (the progress says so), holds. A seq whose row
    /// is missing is an error, never a seq to fill again: its record was acked, and
    /// storing another over it would answer a resend wrongly and could place a second
    /// record in its stead. Nothing of the batch is acked (503); the device sends again.
    async fn received_entries(&self, store: &dyn Store, seqs: &[u64]) -> Result<Vec<SeqEntry>, StoreError> {
        let entries = store.seq_entries(&self.device_id, seqs).await?;
        seqs.iter()
            .zip(entries)
            .map(|(seq, entry)| {
                entry.ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "device {}: seq {seq} is received, yet its row was not found",
                        self.device_id
                    ))
                })
            })
            .collect()
    }

    /// The batch's audit entry and its counts for the sync statistics, written with it.
    fn audit_and_stats(&self, acks: &[Ack]) -> (Vec<AuditEvent>, Vec<SyncCounts>) {
        let mut totals = SyncTotals { batches_succeeded: 1, ..SyncTotals::default() };
        for ack in acks {
            *match ack.status {
                AckStatus::Accepted => &mut totals.accepted,
                AckStatus::Duplicate => &mut totals.duplicate,
                AckStatus::Conflict => &mut totals.conflict,
                AckStatus::Rejected => &mut totals.rejected,
            } += 1;
        }
        let now = unix_now_ms();
        let audit = AuditEvent {
            at: self.received_at,
            org_id: self.org_id.to_string(),
            device_id: self.device_id.to_string(),
            event: AuditKind::BatchReceived {
                batch_id: Some(self.batch_id.clone()),
                outcome: "ok".into(),
                http_status: 200,
                latency_ms: (now - self.received_at).max(0) as u64,
                records: acks.len() as u32,
                acks: acks
                    .iter()
                    .map(|ack| AuditAck {
                        seq: ack.seq,
                        status: ack.status,
                        reason: ack.reason,
                        conflict_id: ack.conflict_id.clone(),
                    })
                    .collect(),
            },
        };
        let stats = SyncCounts::of(&audit, totals);
        (vec![audit], vec![stats])
    }

    /// The ack for one record and, for a newly filled seq, what to store in it.
    fn carry_out(&self, record: Incoming, decision: RecordDecision) -> (Ack, Option<SeqEntry>) {
        let seq = record.seq;
        match (decision, record.verdict) {
            (RecordDecision::Store, Ok(valid)) => {
                let stored = StoredRecord {
                    device_id: self.device_id.to_string(),
                    org_id: self.org_id.to_string(),
                    batch_id: self.batch_id.clone(),
                    received_at: self.received_at,
                    record: valid,
                };
                (ack(seq, AckStatus::Accepted, None, None), Some(SeqEntry::Stored(stored)))
            }
            (RecordDecision::Refuse, Err(rejection)) => {
                let ack = ack(seq, AckStatus::Rejected, Some(rejection.reason), rejection.detail.clone());
                let refused = SeqEntry::Rejected {
                    seq: seq as u64,
                    record_id: record.record_id,
                    reason: rejection.reason,
                    detail: rejection.detail,
                };
                (ack, Some(refused))
            }
            (RecordDecision::NoSlot, verdict) => {
                let detail = verdict.err().and_then(|rejection| rejection.detail);
                (ack(seq, AckStatus::Rejected, Some(RejectReason::Invalid), detail), None)
            }
            (RecordDecision::Replay { status, reason, detail }, _) => (ack(seq, status, reason, detail), None),
            (RecordDecision::SeqReused, _) => {
                (ack(seq, AckStatus::Rejected, Some(RejectReason::SeqReused), None), None)
            }
            (decision @ (RecordDecision::Store | RecordDecision::Refuse), verdict) => {
                unreachable!("dedupe decided {decision:?} for a record whose verdict is {verdict:?}")
            }
        }
    }
}

fn ack(seq: i64, status: AckStatus, reason: Option<RejectReason>, detail: Option<String>) -> Ack {
    Ack { seq, status, reason, conflict_id: None, detail }
}

/// The server clock, unix ms.
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}
