//! The embedded store on fjall: one machine, no set-up, durable by group commit.
//!
//! Callers build their own atomic write batch on their own threads (encoding, key
//! building and copying are the larger part of a write) and queue it. A backlog batch
//! goes to the committer (`committer.rs`), which commits queued batches one after
//! another, each with its statistics, fsyncs the journal once for the whole group, and
//! only then answers every caller in the group. A small live batch (a check-in) goes
//! to the live log (`live_log.rs`) and is acked once its entry there is durable; the
//! committer applies it to the tables right after, and reads wait for what they could
//! see (`read_barrier.rs`). So a check-in never waits behind backlog being written.

mod committer;
mod live_log;
mod ownership;
mod read_barrier;
mod replay;
mod sealer;
mod tables;
mod write_set;

use super::codec::{decode, encode};
use super::keys;
use super::{
    waiting_bucket, AdminResolution, AuditEvent, AuditKind, AuditScope, Commit, ConflictRecord, Cursor, DeviceClaim,
    DeviceEnrolment, DeviceProgress, GatewayMember, Page, Resolved, SeqEntry, Store, StoreError, SyncTotals,
    TimelineEntry,
};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
use committer::{Committer, Origin, PendingCommit, Queues as CommitterQueues};
use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode};
use live_log::{LiveCommit, LiveLog, LiveWriter};
use otg_schema::{OrgSettings, UtcDay};
use read_barrier::{ReadBarrier, Touched};
use replay::replay_live_log;
use tables::{read, scan_after, Tables};
use write_set::{audit_writes, batch_of, touched_by, writes_of, LiveEntry, Write};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
pub use tables::EmbeddedStoreOptions;
use tokio::sync::{mpsc, oneshot};

/// The key in `meta` of the last live log entry applied to the tables.
const LIVE_APPLIED: &[u8] = b"live_applied";
/// Live commits that may wait for the live log writer.
const LIVE_QUEUE: usize = 1024;
/// The least journal fjall takes (it refuses less).
const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Spans of days shorter than this are answered with a point read per day; longer ones
/// with one scan, which costs about as much as four point reads (`timeline_days`).
const POINT_READ_DAYS: i32 = 4;

/// Where commits go.
struct Senders {
    backlog: mpsc::Sender<PendingCommit>,
    live: mpsc::Sender<LiveCommit>,
}

pub struct EmbeddedStore {
    db: Database,
    tables: Tables,
    /// `None` once closed.
    senders: Mutex<Option<Senders>>,
    /// The live log writer and the committer, joined in that order on close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    barrier: Arc<ReadBarrier>,
    live_log_max_records: usize,
    live_window_ms: i64,
    /// Serialises enrolment, revocation and resolution, whose read-then-write must not
    /// interleave.
    admin_writes: tokio::sync::Mutex<()>,
    /// Set by the first failed write: fjall refuses every write after one (it poisons
    /// itself), so the store stays unavailable until the gateway restarts.
    failed: Arc<AtomicBool>,
    ownership: ownership::Ownership,
}

impl EmbeddedStore {
    pub fn open(options: EmbeddedStoreOptions, metrics: StoreMetrics) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.path).map_err(unavailable)?;
        let builder = Database::builder(&options.path)
            .cache_size(options.cache_bytes)
            .max_journaling_size(options.journal_bytes.max(MIN_JOURNAL_BYTES))
            .manual_journal_persist(true);
        let builder = match options.background_threads {
            Some(threads) => builder.worker_threads(threads),
            None => builder,
        };
        let db = builder.open().map_err(unavailable)?;
        let tables = Tables::open(&db, options.memtable_bytes)?;
        let failed = Arc::new(AtomicBool::new(false));
        let applied: u64 = read(&tables.meta, LIVE_APPLIED)?.unwrap_or(0);
        let (barrier, durable_lsn) = (Arc::new(ReadBarrier::new(applied)), Arc::new(AtomicU64::new(applied)));
        let (sealer, seal_requests) = sealer::sealer(tables.clone(), failed.clone(), barrier.clone());
        let committer = Committer {
            db: db.clone(),
            tables: tables.clone(),
            max_group: options.max_group_commits,
            max_group_records: options.max_group_records,
            max_waiting: options.commit_queue_capacity,
            write_buffer_limit: options.write_buffer_bytes,
            metrics: metrics.clone(),
            failed: failed.clone(),
            barrier: barrier.clone(),
            durable_lsn: durable_lsn.clone(),
            sealer: seal_requests,
        };
        let log_dir = options.path.join("live-log");
        let last = replay_live_log(&committer, &log_dir, applied)?;
        barrier.applied(last);
        durable_lsn.store(last, Ordering::Release);
        let (backlog, backlog_queue) = mpsc::channel(options.commit_queue_capacity);
        let (applies, applies_queue) = mpsc::channel(options.commit_queue_capacity);
        let (live, live_queue) = mpsc::channel(LIVE_QUEUE);
        let writer = LiveWriter {
            log: LiveLog::create(&log_dir, last + 1)?,
            applies,
            barrier: barrier.clone(),
            durable_lsn,
            failed: failed.clone(),
            metrics,
        };
        let committer_queues = CommitterQueues { applies: applies_queue, backlog: backlog_queue };
        let threads = vec![
            std::thread::Builder::new()
                .name("otg-live-log".into())
                .spawn(move || writer.run(live_queue))
                .map_err(unavailable)?,
            std::thread::Builder::new()
                .name("otg-committer".into())
                .spawn(move || committer.run(committer_queues))
                .map_err(unavailable)?,
            // Stops once the committer has: it holds the only way to wake it.
            std::thread::Builder::new().name("otg-sealer".into()).spawn(move || sealer.run()).map_err(unavailable)?,
        ];
        Ok(EmbeddedStore {
            db,
            tables,
            senders: Mutex::new(Some(Senders { backlog, live })),
            threads: Mutex::new(threads),
            barrier,
            live_log_max_records: options.live_log_max_records,
            live_window_ms: options.live_window_ms,
            admin_writes: tokio::sync::Mutex::new(()),
            failed,
            ownership: Default::default(),
        })
    }

    /// Whether `commit` goes through the live log: a live one (its newest record
    /// recorded within the live window of its receipt) of few records, counting those
    /// it releases into the timeline from behind a gap as well as its own.
    fn takes_live_log(&self, commit: &Commit) -> bool {
        let Some(device) = &commit.device else { return false };
        let live = device
            .entries
            .iter()
            .filter_map(|entry| match entry {
                SeqEntry::Stored(stored) => Some(stored.received_at - stored.record.recorded_at),
                SeqEntry::Rejected { .. } => None,
            })
            .min()
            .is_some_and(|age| age <= self.live_window_ms);
        let records = device.entries.len().max(commit.timeline.len());
        live && self.live_log_max_records > 0 && records <= self.live_log_max_records
    }

    /// Writes one value outside the group committer, durably: for rare admin writes.
    async fn put_durably(&self, keyspace: &Keyspace, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        batch.insert(keyspace, key, value);
        self.write_durably(batch).await
    }

    /// A conflict as detected, with its resolution if it has one, once its commit is
    /// (the newcomer's seq is in its device's progress: the trait's commit point).
    fn read_conflict(&self, conflict_id: &[u8]) -> Result<Option<ConflictRecord>, StoreError> {
        let Some(mut conflict) = read::<ConflictRecord>(&self.tables.conflicts, conflict_id)? else {
            return Ok(None);
        };
        let newcomer = &conflict.device_record;
        let progress: DeviceProgress = read(&self.tables.progress, newcomer.device_id.as_bytes())?.unwrap_or_default();
        if !progress.received.contains(newcomer.seq) {
            return Ok(None);
        }
        if let Some(resolution) = read(&self.tables.conflict_resolutions, conflict_id)? {
            conflict.resolution = Some(resolution);
        }
        Ok(Some(conflict))
    }

    /// Commits an admin write and fsyncs it on a blocking thread: the caller is an HTTP
    /// worker, and every request on that worker (live check-ins among them) would wait
    /// out the fsync behind it.
    async fn write_durably(&self, batch: OwnedWriteBatch) -> Result<(), StoreError> {
        let db = self.db.clone();
        let outcome =
            tokio::task::spawn_blocking(move || batch.commit().and_then(|()| db.persist(PersistMode::SyncAll)))
                .await
                .map_err(unavailable)
                .and_then(|written| written.map_err(unavailable));
        if outcome.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        outcome
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn enrol_device(&self, enrolment: &DeviceEnrolment) -> Result<(), StoreError> {
        let _serialised = self.admin_writes.lock().await;
        let key = enrolment.device_id.as_bytes();
        if let Some(stored) = read::<DeviceEnrolment>(&self.tables.devices, key)? {
            // One atomic batch wrote it with its audit entry: a retry has nothing to add.
            return if stored == *enrolment { Ok(()) } else { Err(StoreError::AlreadyExists) };
        }
        let mut batch = self.db.batch();
        batch.insert(&self.tables.devices, key, encode(enrolment));
        batch.insert(&self.tables.org_devices, keys::pair(&enrolment.org_id, &enrolment.device_id), key);
        let event = AuditKind::DeviceEnrolled { employee_id: enrolment.employee_id.clone() };
        for Write(table, key, value) in audit_writes(&enrolment.audit(enrolment.enrolled_at, event)) {
            batch.insert(self.tables.of(table), key, value);
        }
        self.write_durably(batch).await
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceEnrolment>, StoreError> {
        read(&self.tables.devices, device_id.as_bytes())
    }

    async fn revoke_device(&self, device_id: &str, at: i64) -> Result<Option<DeviceEnrolment>, StoreError> {
        let _serialised = self.admin_writes.lock().await;
        let Some(mut enrolment) = read::<DeviceEnrolment>(&self.tables.devices, device_id.as_bytes())? else {
            return Ok(None);
        };
        if enrolment.revoked_at.is_none() {
            enrolment.revoked_at = Some(at);
            let mut batch = self.db.batch();
            batch.insert(&self.tables.devices, device_id.as_bytes(), encode(&enrolment));
            for Write(table, key, value) in audit_writes(&enrolment.audit(at, AuditKind::DeviceRevoked)) {
                batch.insert(self.tables.of(table), key, value);
            }
            self.write_durably(batch).await?;
        }
        Ok(Some(enrolment))
    }

    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        self.barrier.wait(Some(&Touched::Device(device_id.into()))).await?;
        Ok(read(&self.tables.progress, device_id.as_bytes())?.unwrap_or_default())
    }

    async fn claim_device(&self, device_id: &str) -> Result<DeviceClaim, StoreError> {
        let epoch = self.ownership.claim(device_id);
        let progress = self.device_progress(device_id).await?;
        self.ownership.follows(device_id, epoch, progress.last_commit);
        Ok(DeviceClaim { epoch, progress })
    }

    async fn employee_version(&self, org_id: &str, employee_id: &str) -> Result<i64, StoreError> {
        Ok(self.ownership.employee_version(org_id, employee_id))
    }

    async fn heartbeat(&self, gateway: &GatewayMember, ttl: std::time::Duration) -> Result<(), StoreError> {
        self.ownership.heartbeat(gateway, ttl);
        Ok(())
    }

    async fn live_gateways(&self) -> Result<Vec<GatewayMember>, StoreError> {
        Ok(self.ownership.live_gateways())
    }

    async fn leave(&self, gateway_id: &str) -> Result<(), StoreError> {
        self.ownership.leave(gateway_id);
        Ok(())
    }

    /// A scan of every device's progress: only one gateway ever opens an embedded
    /// store, so this is read once, at start-up, never on a change of gateways.
    async fn devices_waiting(&self, buckets: &[u16]) -> Result<Vec<String>, StoreError> {
        self.barrier.wait(None).await?;
        let mut waiting = Vec::new();
        for item in self.tables.progress.iter() {
            let (device_id, value) = item.into_inner().map_err(unavailable)?;
            let device_id = String::from_utf8_lossy(&device_id).into_owned();
            if buckets.contains(&waiting_bucket(&device_id))
                && decode::<DeviceProgress>(&value)?.evaluation.waiting_since.is_some()
            {
                waiting.push(device_id);
            }
        }
        Ok(waiting)
    }

    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError> {
        self.barrier.wait(Some(&Touched::Device(device_id.into()))).await?;
        seqs.iter().map(|&seq| read(&self.tables.seqs, &keys::seq(device_id, seq))).collect()
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(failed_earlier());
        }
        // A commit is one atomic write here: a cut falls before all of it or after.
        super::write_point()?;
        if let Some(device) = &commit.device {
            self.ownership.check_epoch(device)?;
        }
        self.ownership.advance(&commit.employees, commit.id)?;
        let writes = writes_of(commit);
        let records = commit.device.as_ref().map_or(0, |device| device.entries.len());
        let senders = self
            .senders
            .lock()
            .expect("senders lock")
            .as_ref()
            .map(|senders| (senders.backlog.clone(), senders.live.clone()));
        let (backlog, live) = senders.ok_or_else(closed)?;
        let (done, durable) = oneshot::channel();
        if self.takes_live_log(commit) {
            let entry = LiveEntry { writes, stats: commit.stats.clone() };
            let payload = encode(&entry);
            let (batch, touched) = (batch_of(&self.db, &self.tables, entry.writes), touched_by(commit));
            live.send(LiveCommit { payload, batch, records, stats: entry.stats, touched, done })
                .await
                .map_err(|_| closed())?;
        } else {
            let batch = batch_of(&self.db, &self.tables, writes);
            backlog
                .send(PendingCommit { batch, records, stats: commit.stats.clone(), origin: Origin::Caller(done) })
                .await
                .map_err(|_| closed())?;
        }
        durable.await.map_err(|_| closed())?
    }

    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError> {
        self.barrier.wait(Some(&Touched::Employee(org_id.into(), employee_id.into()))).await?;
        let partition = keys::timeline_partition(org_id, employee_id, day);
        if !self.tables.timeline_days.contains_key(&partition).map_err(unavailable)? {
            return Ok(Vec::new());
        }
        self.tables.timeline.prefix(partition).map(|item| decode(&item.into_inner().map_err(unavailable)?.1)).collect()
    }

    /// A point read of each day's marker for a short span, one scan of the span's
    /// markers for a long one. A scan seeks in every memtable and table file it spans,
    /// with no filter to skip one: for the day or two of a check-in it was the costliest
    /// read (docs/benchmarks.md), where a point read mostly ends at a table's filter;
    /// but a scan costs about as much as a few point reads, however many days it spans
    /// (a conflict actor asks for weeks at once when an employee's backlog walks
    /// through its days, and a leave spans up to 367).
    async fn timeline_days(
        &self,
        org_id: &str,
        employee_id: &str,
        (first, last): (UtcDay, UtcDay),
    ) -> Result<Vec<UtcDay>, StoreError> {
        self.barrier.wait(Some(&Touched::Employee(org_id.into(), employee_id.into()))).await?;
        let partition = |day| keys::timeline_partition(org_id, employee_id, day);
        if last.0 - first.0 < POINT_READ_DAYS {
            let mut written = Vec::new();
            for day in first.through(last) {
                if self.tables.timeline_days.contains_key(partition(day)).map_err(unavailable)? {
                    written.push(day);
                }
            }
            return Ok(written);
        }
        self.tables
            .timeline_days
            .range(partition(first)..=partition(last))
            .map(|item| Ok(keys::day_of_timeline_partition(&item.key().map_err(unavailable)?)))
            .collect()
    }

    async fn resolve_conflict(
        &self,
        conflict_id: &str,
        resolution: &AdminResolution,
        effects: &Commit,
    ) -> Result<Resolved, StoreError> {
        let _serialised = self.admin_writes.lock().await;
        let Some(mut conflict) = self.conflict(conflict_id).await? else {
            return Ok(Resolved::NotFound);
        };
        match &conflict.resolution {
            Some(standing) if !standing.same_decision(resolution) => return Ok(Resolved::Already(conflict)),
            Some(_) => {}
            None => conflict.resolution = Some(resolution.clone()),
        }
        // The decision, its effects and its audit entries in one atomic write: the
        // decision is the commit point, and none of its effects is seen without it.
        self.ownership.advance(&effects.employees, effects.id)?;
        let audit = conflict.resolution_audit();
        let mut batch = batch_of(&self.db, &self.tables, writes_of(&Commit { audit, ..effects.clone() }));
        let standing = conflict.resolution.as_ref().expect("set above");
        batch.insert(&self.tables.conflict_resolutions, conflict_id.as_bytes(), encode(standing));
        self.write_durably(batch).await?;
        Ok(Resolved::Now(conflict))
    }

    async fn conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        self.barrier.wait(None).await?;
        self.read_conflict(conflict_id.as_bytes())
    }

    async fn conflicts(
        &self,
        org_id: &str,
        open: Option<bool>,
        page: Page<'_>,
    ) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError> {
        self.barrier.wait(None).await?;
        let mut found = Vec::with_capacity(page.limit);
        for item in scan_after(&self.tables.conflicts_by_org, &keys::text_prefix(org_id), page.after) {
            let (key, conflict_id) = item.into_inner().map_err(unavailable)?;
            // A listed conflict whose commit was cut short is no conflict yet.
            let Some(conflict) = self.read_conflict(&conflict_id)? else { continue };
            if open.is_none_or(|open| open == conflict.is_open()) {
                found.push((conflict, key.to_vec()));
                if found.len() == page.limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn open_conflicts_of_device(&self, device_id: &str) -> Result<Vec<ConflictRecord>, StoreError> {
        self.barrier.wait(None).await?;
        let mut open = Vec::new();
        for item in self.tables.conflicts_by_device.prefix(keys::text_prefix(device_id)) {
            let (_, conflict_id) = item.into_inner().map_err(unavailable)?;
            if let Some(conflict) = self.read_conflict(&conflict_id)?.filter(ConflictRecord::is_open) {
                open.push(conflict);
            }
        }
        Ok(open)
    }

    async fn audit(
        &self,
        scope: AuditScope<'_>,
        since: i64,
        until: i64,
        page: Page<'_>,
    ) -> Result<Vec<(AuditEvent, Cursor)>, StoreError> {
        self.barrier.wait(None).await?;
        let (keyspace, partition) = match scope {
            AuditScope::Device(device_id) => (&self.tables.audit_by_device, device_id),
            AuditScope::Org(org_id) => (&self.tables.audit_by_org, org_id),
        };
        let (from, end) = (keys::timed_from(partition, since), keys::timed_from(partition, until.saturating_add(1)));
        // A cursor counts only inside this partition's window: one from another listing
        // must not read someone else's trail.
        let after = page.after.filter(|after| *after >= from.as_slice() && *after < end.as_slice());
        let start = after.map(<[u8]>::to_vec).unwrap_or(from);
        let bound = if after.is_some() {
            std::ops::Bound::Excluded(fjall::UserKey::from(start))
        } else {
            std::ops::Bound::Included(fjall::UserKey::from(start))
        };
        let mut found = Vec::with_capacity(page.limit);
        for item in keyspace.range((bound, std::ops::Bound::Excluded(fjall::UserKey::from(end)))).take(page.limit) {
            let (key, value) = item.into_inner().map_err(unavailable)?;
            found.push((decode(&value)?, key.to_vec()));
        }
        Ok(found)
    }

    async fn sync_totals(&self, org_id: &str, since: i64) -> Result<SyncTotals, StoreError> {
        self.barrier.wait(None).await?;
        let mut totals = SyncTotals::default();
        for item in scan_after(&self.tables.stats_by_org_hour, &keys::text_prefix(org_id), None).rev() {
            let (key, value) = item.into_inner().map_err(unavailable)?;
            if key.as_ref() < keys::timed_from(org_id, hour_of(since)).as_slice() {
                break;
            }
            totals.add(&decode(&value)?);
        }
        Ok(totals)
    }

    async fn device_totals(&self, device_id: &str) -> Result<SyncTotals, StoreError> {
        self.barrier.wait(None).await?;
        Ok(read(&self.tables.stats_by_device, device_id.as_bytes())?.unwrap_or_default())
    }

    async fn devices_of_org(&self, org_id: &str, page: Page<'_>) -> Result<Vec<(DeviceEnrolment, Cursor)>, StoreError> {
        let mut found = Vec::with_capacity(page.limit);
        for item in scan_after(&self.tables.org_devices, &keys::text_prefix(org_id), page.after).take(page.limit) {
            let (key, device_id) = item.into_inner().map_err(unavailable)?;
            if let Some(device) = read(&self.tables.devices, &device_id)? {
                found.push((device, key.to_vec()));
            }
        }
        Ok(found)
    }

    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError> {
        Ok(read(&self.tables.orgs, org_id.as_bytes())?.unwrap_or_default())
    }

    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError> {
        self.put_durably(&self.tables.orgs, org_id.as_bytes(), encode(settings)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.senders.lock().expect("senders lock").is_none() {
            return Err(closed());
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err(failed_earlier());
        }
        self.tables.devices.contains_key(b"").map(drop).map_err(unavailable)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Dropping the senders lets the live log writer finish what is queued and exit,
        // then the committer (the writer holds a sender of its own), then the sealer.
        drop(self.senders.lock().expect("senders lock").take());
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for thread in threads {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(unavailable)?
                .map_err(|_| StoreError::Unavailable("a store thread panicked".into()))?;
        }
        self.db.persist(PersistMode::SyncAll).map_err(unavailable)
    }
}

/// The first millisecond of the UTC hour of `at`.
fn hour_of(at: i64) -> i64 {
    at.div_euclid(3_600_000) * 3_600_000
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Stops the store after a write failed on one of its threads: every later write is
/// refused (fjall refuses them anyway after one failed write), and a read that waits
/// for an apply gets an error instead of waiting for ever.
fn halt(failed: &AtomicBool, barrier: &ReadBarrier) {
    failed.store(true, Ordering::Relaxed);
    barrier.fail();
}

fn failed_earlier() -> StoreError {
    StoreError::Failed("an earlier write failed; restart the gateway once the disk is fixed".into())
}

fn closed() -> StoreError {
    StoreError::Failed("the store is closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SyncCounts;

    fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
        let metrics = StoreMetrics::register(&prometheus::Registry::new()).unwrap();
        EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), metrics).unwrap()
    }

    #[actix_rt::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run_all(&open(&dir)).await;
    }

    #[actix_rt::test]
    async fn what_was_committed_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        super::super::conformance::commit_one_record(&store, "dev-reopen").await;
        store.close().await.unwrap();
        let write = super::super::DeviceWrite {
            device_id: "dev-reopen".into(),
            entries: vec![],
            progress: DeviceProgress::default(),
            epoch: 0,
            after: None,
            was_waiting: false,
        };
        assert!(
            store.commit(&Commit { device: Some(write), ..Commit::default() }).await.is_err(),
            "a closed store refuses writes"
        );
        drop(store);
        let reopened = open(&dir);
        assert_eq!(reopened.device_progress("dev-reopen").await.unwrap().received.next_seq(), 2);
    }

    /// A live commit counted once, with its device's progress and seq.
    async fn live_commit(store: &EmbeddedStore, device_id: &str) {
        let counts = SyncCounts {
            org_id: "acme".into(),
            device_id: device_id.into(),
            at: 0,
            key: 1,
            totals: SyncTotals { accepted: 1, ..SyncTotals::default() },
        };
        store.commit(&Commit { stats: vec![counts], ..live_commit_of(device_id, 1) }).await.unwrap();
    }

    /// Live log groups written so far.
    fn live_log_groups(registry: &prometheus::Registry) -> u64 {
        let families = registry.gather();
        let family = families.iter().find(|family| family.name() == "otg_store_live_log_duration_seconds").unwrap();
        family.get_metric()[0].get_histogram().get_sample_count()
    }

    /// A live commit of `records` new seqs.
    fn live_commit_of(device_id: &str, records: u64) -> Commit {
        let mut progress = DeviceProgress::default();
        let entries = (1..=records)
            .map(|seq| {
                progress.received.insert(seq);
                super::super::conformance::stored(
                    device_id,
                    super::super::conformance::record(seq, "emp-1", 1_764_028_800_000),
                )
            })
            .collect();
        // Recorded when received: live by the live window.
        super::super::conformance::device_commit(device_id, entries, progress)
    }

    #[actix_rt::test]
    async fn only_small_live_commits_go_through_the_live_log() {
        for (max, small_logged) in [(2, 1), (0, 0)] {
            let (dir, registry) = (tempfile::tempdir().unwrap(), prometheus::Registry::new());
            let options = EmbeddedStoreOptions { live_log_max_records: max, ..EmbeddedStoreOptions::new(dir.path()) };
            let store = EmbeddedStore::open(options, StoreMetrics::register(&registry).unwrap()).unwrap();
            store.commit(&live_commit_of("dev-small", 2)).await.unwrap();
            assert_eq!(live_log_groups(&registry), small_logged, "two records, at most {max} through the log");
            store.commit(&live_commit_of("dev-large", 3)).await.unwrap();
            assert_eq!(live_log_groups(&registry), small_logged, "three records are more than the live log takes");
            assert_eq!(
                store.device_progress("dev-large").await.unwrap().received.next_seq(),
                4,
                "and it was stored all the same"
            );
        }
    }

    /// The soak's shape without HTTP: a long run of one-record commits, each of another
    /// device and with its audit entry and counts. The memtables' bytes
    /// (`otg_store_write_buffer_bytes`) stay within what the settings bound, though the
    /// run writes more than that (docs/configuration.md, "Memory"): the store's write
    /// buffer limit, plus one group commit written before the limit was passed. Small
    /// memtables flush often, so writes outrun the flushes here unless held. fjall gets
    /// one thread to flush with, as on a one-CPU pod: when fjall sealed memtables
    /// itself, its requests filled its workers' queue and this run stopped for good.
    #[actix_rt::test]
    async fn a_long_run_of_small_commits_keeps_the_memtables_bounded() {
        use super::super::conformance::{batch_received, DAY_START};
        const MEMTABLE: u64 = 256 * 1024;
        const LIMIT: u64 = 8 * 1024 * 1024;
        const ROUND: u64 = 1000;
        const ROUNDS: u64 = 150;
        let round = |round: u64| -> Vec<Commit> {
            (0..ROUND)
                .map(|n| {
                    let device = format!("dev-{round}-{n}");
                    let received = batch_received("acme", &device, DAY_START + n as i64);
                    let counts = SyncTotals { accepted: 1, ..SyncTotals::default() };
                    Commit {
                        stats: vec![SyncCounts::of(&received, counts)],
                        audit: vec![received],
                        ..live_commit_of(&device, 1)
                    }
                })
                .collect()
        };
        /// Commits all, failing rather than waiting for good if the store stops.
        async fn commit_all(store: &EmbeddedStore, commits: &[Commit]) {
            let all = futures_util::future::try_join_all(commits.iter().map(|commit| store.commit(commit)));
            let done = tokio::time::timeout(std::time::Duration::from_secs(120), all).await;
            done.expect("the store stopped committing for two minutes").unwrap();
        }
        // One group commit's bytes as fjall counts them (each row with its overhead),
        // measured in a store whose memtables do not fill, on the last round: its
        // device ids are the longest.
        let group = {
            let unflushed = tempfile::tempdir().unwrap();
            let store = open(&unflushed);
            commit_all(&store, &round(ROUNDS - 1)).await;
            store.close().await.unwrap();
            let group_commits = EmbeddedStoreOptions::new(unflushed.path()).max_group_commits as u64;
            store.db.write_buffer_size().div_ceil(ROUND) * group_commits
        };
        let (dir, registry) = (tempfile::tempdir().unwrap(), prometheus::Registry::new());
        let options = EmbeddedStoreOptions {
            memtable_bytes: MEMTABLE,
            write_buffer_bytes: LIMIT,
            background_threads: Some(1),
            ..EmbeddedStoreOptions::new(dir.path())
        };
        let store = EmbeddedStore::open(options, StoreMetrics::register(&registry).unwrap()).unwrap();
        let bound = LIMIT + group;
        let (mut written, mut peak) = (0, 0);
        for n in 0..ROUNDS {
            let commits = round(n);
            let bytes = commits.iter().flat_map(writes_of).map(|Write(_, key, value)| key.len() + value.len());
            written += bytes.sum::<usize>() as u64;
            commit_all(&store, &commits).await;
            peak = peak.max(write_buffer_bytes(&registry));
        }
        assert!(written > 2 * bound, "the run writes more than twice the bound: {written} bytes");
        assert!(peak > 0 && peak <= bound, "the memtables held {peak} bytes at most; the bound is {bound}");
    }

    fn write_buffer_bytes(registry: &prometheus::Registry) -> u64 {
        let families = registry.gather();
        let family = families.iter().find(|family| family.name() == "otg_store_write_buffer_bytes").unwrap();
        family.get_metric()[0].get_gauge().get_value() as u64
    }

    fn copy_log(from: &tempfile::TempDir, to: &tempfile::TempDir) {
        let (from, to) = (from.path().join("live-log"), to.path().join("live-log"));
        for segment in std::fs::read_dir(&from).unwrap() {
            let segment = segment.unwrap().path();
            std::fs::copy(&segment, to.join(segment.file_name().unwrap())).unwrap();
        }
    }

    /// A crash after the live log's fsync (the ack) and before the apply: the next
    /// open applies the entry; a crash after the apply and before the log forgot the
    /// entry: the next open does not apply it twice.
    #[actix_rt::test]
    async fn an_acked_live_entry_is_applied_at_the_next_open_exactly_once() {
        let (logged, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = open(&logged);
        live_commit(&store, "dev-live").await;
        store.close().await.unwrap();
        open(&crashed).close().await.unwrap();
        copy_log(&logged, &crashed);

        let reopened = open(&crashed);
        assert_eq!(
            reopened.device_progress("dev-live").await.unwrap().received.next_seq(),
            2,
            "the acked entry was applied"
        );
        assert!(reopened.seq_entries("dev-live", &[1]).await.unwrap()[0].is_some());
        assert_eq!(reopened.device_totals("dev-live").await.unwrap().accepted, 1);
        live_commit(&reopened, "dev-after").await;
        reopened.close().await.unwrap();
        drop(reopened);

        copy_log(&logged, &crashed);
        let again = open(&crashed);
        assert_eq!(again.device_totals("dev-live").await.unwrap().accepted, 1, "an applied entry is not applied again");
        assert_eq!(
            again.device_totals("dev-after").await.unwrap().accepted,
            1,
            "entries after the replay keep their own numbers"
        );
    }
}
