//! `DeviceActor`: one per active device, the only writer of that device's seqs.
//!
//! It handles one batch at a time (an atomic response), so a device's batches are
//! decided in arrival order against an up-to-date picture of what it has delivered,
//! and it acks only after the store says the batch is durable.

use crate::conflict_actor::EmployeeRecords;
use crate::conflict_actors::ConflictActors;
use crate::dedupe::{self, Decision, Incoming};
use crate::employee_timeline::Placed;
use crate::evaluation::{self, EvaluationPlan};
use crate::registry::{Lane, RegistryHandle};
use crate::retry::{self, RetryPolicy};
use crate::seq_ranges::SeqRanges;
use crate::store::{
    AuditAck, AuditEvent, AuditKind, Commit, ConflictRecord, DeviceProgress, DeviceWrite, RecordStatus, SeqEntry,
    Store, StoreError, StoredRecord, SyncCounts, SyncTotals, TimelineEntry,
};
use actix::prelude::*;
use otg_schema::wire::{Ack, AckStatus, RejectReason};
use otg_schema::OrgSettings;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// One checked batch of a device, as the gateway hands it over.
#[derive(Debug)]
pub struct Upload {
    pub org_id: String,
    pub batch_id: String,
    /// Server clock at receipt, unix ms.
    pub received_at: i64,
    pub reported_pending: Option<u64>,
    pub records: Vec<Incoming>,
    /// The org's settings when the batch arrived.
    pub settings: OrgSettings,
    /// A live batch (recent records): committed ahead of backlog.
    pub live: bool,
}

/// Ingest one upload; the outcome comes back on `reply` once durable. The mailbox
/// slot is held until then, which is what bounds a device's queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct IngestBatch {
    pub(crate) upload: Upload,
    pub(crate) reply: oneshot::Sender<Result<BatchOutcome, StoreError>>,
    pub(crate) mailbox_slot: MailboxSlot,
}

/// A device's mailbox slot, held by a batch from queueing until it is answered; it
/// keeps the all-devices mailbox gauge.
pub(crate) struct MailboxSlot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl MailboxSlot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        MailboxSlot { _permit: permit, gauge }
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The acks of a durable batch, in the order of its records.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub acks: Vec<Ack>,
    pub next_seq: u64,
}

/// Read the device's sync progress (through the actor, so it is never stale).
#[derive(Message)]
#[rtype(result = "Result<DeviceProgress, StoreError>")]
pub struct ReadProgress;

pub struct DeviceActor {
    device_id: Arc<str>,
    /// The arbiters it runs on.
    lane: Lane,
    store: Arc<dyn Store>,
    registry: RegistryHandle,
    /// The slots of this device's mailbox, shared with the registry.
    mailbox: Arc<Semaphore>,
    /// Loaded from the store on first use, then kept current by every commit.
    progress: Option<DeviceProgress>,
    last_active: Instant,
    idle_timeout: Duration,
    /// The org's gap timeout, as last read, and when the wake-up set is due (unix ms).
    gap_timeout: Option<Duration>,
    wake_up_set_for: Option<i64>,
}

impl DeviceActor {
    pub(crate) fn new(
        device_id: Arc<str>,
        lane: Lane,
        store: Arc<dyn Store>,
        registry: RegistryHandle,
        mailbox: Arc<Semaphore>,
        idle_timeout: Duration,
    ) -> Self {
        DeviceActor {
            device_id,
            lane,
            store,
            registry,
            mailbox,
            progress: None,
            last_active: Instant::now(),
            idle_timeout,
            gap_timeout: None,
            wake_up_set_for: None,
        }
    }

    /// Records wait behind a gap: have the registry wake this device when the gap
    /// timeout is due (the actor itself may stop for idleness meanwhile).
    fn wake_up_for_waiting(&mut self) {
        let waiting_since = self.progress.as_ref().and_then(|progress| progress.evaluation.waiting_since);
        let (Some(since), Some(timeout)) = (waiting_since, self.gap_timeout) else {
            return;
        };
        let due = since + timeout.as_millis() as i64;
        if self.wake_up_set_for != Some(due) {
            self.wake_up_set_for = Some(due);
            self.registry.wake_up(&self.device_id, Duration::from_millis((due - unix_now_ms()).max(0) as u64));
        }
    }

    /// Stops if idle and nothing is queued.
    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.last_active.elapsed() >= self.idle_timeout && self.stop_unless_queued(ctx) {
            self.registry.evicted();
        }
    }

    /// Stops if no batch is queued, and says whether it did. Taking every mailbox slot
    /// and closing the mailbox first means no batch can arrive once it has decided to.
    fn stop_unless_queued(&mut self, ctx: &mut Context<Self>) -> bool {
        let Ok(all_slots) = self.mailbox.try_acquire_many(self.registry.mailbox_capacity()) else {
            return false;
        };
        all_slots.forget();
        self.mailbox.close();
        ctx.stop();
        true
    }
}

impl Actor for DeviceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.idle_timeout / 2, Self::stop_if_idle);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registry.forget(&self.device_id, &ctx.address());
    }
}

impl Handler<IngestBatch> for DeviceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, batch: IngestBatch, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let (store, device_id, progress) = (self.store.clone(), self.device_id.clone(), self.progress.take());
        let (conflicts, store_retry) = (self.registry.conflict_actors(), self.registry.store_retry());
        let IngestBatch { upload, reply, mailbox_slot } = batch;
        let Upload { org_id, batch_id, received_at, reported_pending, records, settings, live } = upload;
        self.gap_timeout = Some(Duration::from_secs(settings.gap_timeout_s.into()));
        AtomicResponse::new(Box::pin(
            async move {
                let progress = match progress {
                    Some(progress) => progress,
                    None => store.device_progress(&device_id).await?,
                };
                let ingest = Ingest {
                    device_id,
                    store_retry,
                    org_id: org_id.into(),
                    batch_id,
                    received_at,
                    reported_pending,
                    settings,
                    live,
                };
                ingest.run(store.as_ref(), conflicts.as_deref(), progress, records).await
            }
            .into_actor(self)
            .map(move |result, actor, ctx| {
                actor.last_active = Instant::now();
                let outcome = result.map(|(outcome, progress)| {
                    actor.progress = Some(progress);
                    outcome
                });
                // The device may have hung up; its records were stored all the same.
                let _ = reply.send(outcome);
                drop(mailbox_slot);
                actor.wake_up_for_waiting();
                // A batch of the other lane: the device's next batch starts on its own.
                if Lane::of(live) != actor.lane {
                    actor.stop_unless_queued(ctx);
                }
            }),
        ))
    }
}

/// Evaluate the records that have waited behind a gap for the org's gap timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EvaluateWaiting;

impl Handler<EvaluateWaiting> for DeviceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: EvaluateWaiting, _ctx: &mut Self::Context) -> Self::Result {
        let (store, device_id, progress) = (self.store.clone(), self.device_id.clone(), self.progress.take());
        let (conflicts, store_retry) = (self.registry.conflict_actors(), self.registry.store_retry());
        AtomicResponse::new(Box::pin(
            async move {
                let device = store.device(&device_id).await?.ok_or_else(|| StoreError::Corrupt(format!("device {device_id} has progress but no enrolment")))?;
                let settings = store.org_settings(&device.org_id).await?;
                let gap_timeout = Duration::from_secs(settings.gap_timeout_s.into());
                let progress = match progress {
                    Some(progress) => progress,
                    None => store.device_progress(&device_id).await?,
                };
                let now = unix_now_ms();
                let due = progress.evaluation.waiting_since.is_some_and(|since| now - since >= gap_timeout.as_millis() as i64);
                if !due {
                    return Ok((progress, gap_timeout));
                }
                let ingest = Ingest { device_id, store_retry, org_id: device.org_id.into(), batch_id: String::new(), received_at: now, reported_pending: None, settings, live: false };
                let (_, progress) = ingest.run(store.as_ref(), conflicts.as_deref(), progress, Vec::new()).await?;
                Ok((progress, gap_timeout))
            }
            .into_actor(self)
            .map(|result: Result<(DeviceProgress, Duration), StoreError>, actor, _ctx| match result {
                Ok((progress, gap_timeout)) => {
                    actor.progress = Some(progress);
                    actor.gap_timeout = Some(gap_timeout);
                    actor.wake_up_for_waiting();
                }
                Err(error) => {
                    tracing::warn!(%error, device_id = %actor.device_id, "evaluating records that waited behind a gap failed; retrying in 30 s");
                    actor.wake_up_set_for = None;
                    actor.registry.wake_up(&actor.device_id, Duration::from_secs(30));
                }
            }),
        ))
    }
}

impl Handler<ReadProgress> for DeviceActor {
    type Result = AtomicResponse<Self, Result<DeviceProgress, StoreError>>;

    fn handle(&mut self, _: ReadProgress, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let cached = self.progress.clone();
        let (store, device_id) = (self.store.clone(), self.device_id.clone());
        AtomicResponse::new(Box::pin(
            async move {
                match cached {
                    Some(progress) => Ok(progress),
                    None => store.device_progress(&device_id).await,
                }
            }
            .into_actor(self)
            .map(|result, actor, _ctx| {
                if let Ok(progress) = &result {
                    actor.progress = Some(progress.clone());
                }
                result
            }),
        ))
    }
}

/// One batch on its way through dedupe, the durable write and the acks.
struct Ingest {
    device_id: Arc<str>,
    store_retry: (RetryPolicy, IntCounter),
    org_id: Arc<str>,
    batch_id: String,
    received_at: i64,
    reported_pending: Option<u64>,
    settings: OrgSettings,
    live: bool,
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
}

impl Ingest {
    async fn run(
        self,
        store: &dyn Store,
        conflicts: Option<&ConflictActors>,
        progress: DeviceProgress,
        records: Vec<Incoming>,
    ) -> Result<(BatchOutcome, DeviceProgress), StoreError> {
        let lookups = dedupe::seqs_to_look_up(&progress.received, &records);
        let previously: HashMap<u64, SeqEntry> = if lookups.is_empty() {
            HashMap::new()
        } else {
            let entries = store.seq_entries(&self.device_id, &lookups).await?;
            lookups.into_iter().zip(entries).filter_map(|(seq, entry)| Some((seq, entry?))).collect()
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
        };
        let next_seq = progress.received.next_seq();
        let commit = Commit {
            device: Some(DeviceWrite { device_id: self.device_id.to_string(), entries, progress: progress.clone() }),
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
        let (policy, retries) = &self.store_retry;
        let committed = retry::retrying(policy, retries, || store.commit(&commit)).await;
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
        Ok((BatchOutcome { acks, next_seq }, progress))
    }

    /// Places this batch's stored records, and earlier ones a filled gap releases, in
    /// their employees' timelines, evaluating those whose turn it is.
    async fn place(
        &self,
        store: &dyn Store,
        conflicts: Option<&ConflictActors>,
        entries: &[SeqEntry],
        received_before: &SeqRanges,
        plan: &EvaluationPlan,
    ) -> Result<Placement, StoreError> {
        let released: Vec<u64> = received_before.received_in(plan.released()).collect();
        let earlier =
            if released.is_empty() { Vec::new() } else { store.seq_entries(&self.device_id, &released).await? };
        let mut records: Vec<(TimelineEntry, bool)> = earlier
            .iter()
            .flatten()
            .chain(entries)
            .filter_map(|entry| match entry {
                SeqEntry::Stored(stored) => Some((
                    TimelineEntry::of(stored, &self.org_id, &self.device_id, RecordStatus::Pending),
                    plan.evaluates(stored.record.seq),
                )),
                SeqEntry::Rejected { .. } => None,
            })
            .collect();
        let Some(conflicts) = conflicts.filter(|_| !records.is_empty()) else {
            // Conflict detection is off: the records go into the timeline as they are.
            let timeline =
                records.into_iter().map(|(entry, _)| TimelineEntry { status: RecordStatus::Active, ..entry }).collect();
            return Ok(Placement { timeline, ..Placement::default() });
        };
        // Each employee is held until this commit is known; the conflict actors are
        // asked in one order, so two devices sharing employees never wait on each other.
        // Each employee gets its records in seq order.
        records.sort_by(|(a, _), (b, _)| (&a.employee_id, a.seq).cmp(&(&b.employee_id, b.seq)));
        let mut employees: Vec<EmployeeRecords> = Vec::new();
        for (entry, evaluate_now) in records {
            match employees.last_mut() {
                Some(last) if last.employee.1 == entry.employee_id => last.records.push((entry, evaluate_now)),
                _ => employees.push(EmployeeRecords {
                    employee: (self.org_id.clone(), entry.employee_id.clone()),
                    records: vec![(entry, evaluate_now)],
                }),
            }
        }
        let (placed, commit_signals) = conflicts.place(employees, self.received_at, &self.settings, self.live).await?;
        let mut placement = Placement { commit_signals, ..Placement::default() };
        for Placed { entry, superseded, conflicts } in placed.into_iter().flatten() {
            if let Some(first) = conflicts.first() {
                placement.conflict_of.insert(entry.seq, first.id.clone());
            }
            placement.timeline.push(entry);
            placement.timeline.extend(superseded);
            placement.conflicts.extend(conflicts);
        }
        Ok(placement)
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
    fn carry_out(&self, record: Incoming, decision: Decision) -> (Ack, Option<SeqEntry>) {
        let seq = record.seq;
        match (decision, record.verdict) {
            (Decision::Store, Ok(valid)) => {
                let stored = StoredRecord {
                    device_id: self.device_id.to_string(),
                    org_id: self.org_id.to_string(),
                    batch_id: self.batch_id.clone(),
                    received_at: self.received_at,
                    record: valid,
                };
                (ack(seq, AckStatus::Accepted, None, None), Some(SeqEntry::Stored(stored)))
            }
            (Decision::Refuse, Err(rejection)) => {
                let ack = ack(seq, AckStatus::Rejected, Some(rejection.reason), rejection.detail.clone());
                let refused = SeqEntry::Rejected {
                    seq: seq as u64,
                    record_id: record.record_id,
                    reason: rejection.reason,
                    detail: rejection.detail,
                };
                (ack, Some(refused))
            }
            (Decision::NoSlot, verdict) => {
                let detail = verdict.err().and_then(|rejection| rejection.detail);
                (ack(seq, AckStatus::Rejected, Some(RejectReason::Invalid), detail), None)
            }
            (Decision::Replay { status, reason, detail }, _) => (ack(seq, status, reason, detail), None),
            (Decision::SeqReused, _) => (ack(seq, AckStatus::Rejected, Some(RejectReason::SeqReused), None), None),
            (decision @ (Decision::Store | Decision::Refuse), verdict) => {
                unreachable!("dedupe decided {decision:?} for a record whose verdict is {verdict:?}")
            }
        }
    }
}

fn ack(seq: i64, status: AckStatus, reason: Option<RejectReason>, detail: Option<String>) -> Ack {
    Ack { seq, status, reason, conflict_id: None, detail }
}

/// The server clock, unix ms.
fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}
