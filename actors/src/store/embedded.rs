//! The embedded store on fjall: one machine, no set-up, durable by group commit.
//!
//! Callers build their own atomic write batch on their own threads (encoding, key
//! building and copying are the larger part of a write) and queue it; one committer
//! thread commits the queued batches one after another, each with its statistics,
//! fsyncs the journal once for the whole group, and only then answers every caller in
//! the group. A live batch cuts the group short: it is committed next and fsynced at
//! once, so it never waits for a group of backlog to be written.

use super::keys;
use super::{AuditEvent, AuditScope, Commit, ConflictRecord, Cursor, DeviceEnrolment, DeviceProgress, Page, SeqEntry, Store, StoreError, SyncCounts, SyncTotals, TimelineEntry};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use otg_schema::{OrgSettings, UtcDay};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedStoreOptions {
    pub path: PathBuf,
    /// Commits that may wait for the committer; callers beyond it wait to enqueue.
    pub commit_queue_capacity: usize,
    /// The most commits one fsync covers.
    pub max_group_commits: usize,
    /// The most device records one fsync covers (one commit may pass it alone).
    pub max_group_records: usize,
    /// fjall block cache, bytes.
    pub cache_bytes: u64,
    /// Largest memtable of each table before it is flushed, bytes. A table can hold a
    /// few (one active, some sealed waiting for flush), so this bounds the store's
    /// share of memory under load.
    pub memtable_bytes: u64,
}

impl EmbeddedStoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedStoreOptions {
            path: path.into(),
            commit_queue_capacity: 4096,
            max_group_commits: 1024,
            max_group_records: 4_000,
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
struct Tables {
    devices: Keyspace,
    orgs: Keyspace,
    progress: Keyspace,
    seqs: Keyspace,
    timeline: Keyspace,
    conflicts: Keyspace,
    conflicts_by_org: Keyspace,
    conflicts_by_device: Keyspace,
    /// One empty value per timeline partition that holds anything: a point read with a
    /// bloom filter answers "this day is empty" far cheaper than a prefix scan.
    timeline_days: Keyspace,
    audit_by_device: Keyspace,
    audit_by_org: Keyspace,
    stats_by_org_hour: Keyspace,
    stats_by_device: Keyspace,
    org_devices: Keyspace,
}

/// A commit's atomic batch, built by its caller, waiting for the committer.
struct PendingCommit {
    batch: OwnedWriteBatch,
    /// Device records in it, for the group's cap.
    records: usize,
    live: bool,
    /// Counts the committer adds to the statistics, as their single writer.
    stats: Vec<SyncCounts>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

pub struct EmbeddedStore {
    db: Database,
    tables: Tables,
    /// `None` once closed.
    commits: Mutex<Option<mpsc::Sender<PendingCommit>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serialises enrolment and revocation, whose read-then-write must not interleave.
    admin_writes: tokio::sync::Mutex<()>,
    /// Makes audit keys unique: seeded from the clock at open, then counted up.
    audit_sequence: std::sync::atomic::AtomicU64,
    /// Set by the first failed write: fjall refuses every write after one (it poisons
    /// itself), so the store stays unavailable until the gateway restarts.
    failed: Arc<AtomicBool>,
}

impl EmbeddedStore {
    pub fn open(options: EmbeddedStoreOptions, metrics: StoreMetrics) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.path).map_err(unavailable)?;
        let db = Database::builder(&options.path)
            .cache_size(options.cache_bytes)
            .manual_journal_persist(true)
            .open()
            .map_err(unavailable)?;
        let memtable_bytes = options.memtable_bytes;
        // lz4 on every level, not only from L2 on as fjall does by default: a storm's
        // flushes and first compactions then write about 43% fewer bytes (docs/benchmarks.md).
        // Options apply when a keyspace is created; existing ones keep theirs.
        let compression = fjall::config::CompressionPolicy::all(fjall::CompressionType::Lz4);
        let keyspace = |name: &str| {
            let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes).data_block_compression_policy(compression.clone());
            db.keyspace(name, options).map_err(unavailable)
        };
        let tables = Tables {
            devices: keyspace("devices")?,
            orgs: keyspace("orgs")?,
            progress: keyspace("progress")?,
            seqs: keyspace("seqs")?,
            timeline: keyspace("timeline")?,
            conflicts: keyspace("conflicts")?,
            conflicts_by_org: keyspace("conflicts_by_org")?,
            conflicts_by_device: keyspace("conflicts_by_device")?,
            timeline_days: keyspace("timeline_days")?,
            audit_by_device: keyspace("audit_by_device")?,
            audit_by_org: keyspace("audit_by_org")?,
            stats_by_org_hour: keyspace("stats_by_org_hour")?,
            stats_by_device: keyspace("stats_by_device")?,
            org_devices: keyspace("org_devices")?,
        };
        let (sender, receiver) = mpsc::channel(options.commit_queue_capacity);
        let failed = Arc::new(AtomicBool::new(false));
        let committer = {
            let committer = Committer {
                db: db.clone(),
                tables: tables.clone(),
                max_group: options.max_group_commits,
                max_group_records: options.max_group_records,
                max_waiting: options.commit_queue_capacity,
                metrics,
                failed: failed.clone(),
            };
            std::thread::Builder::new()
                .name("otg-committer".into())
                .spawn(move || committer.run(receiver))
                .map_err(unavailable)?
        };
        Ok(EmbeddedStore {
            db,
            tables,
            commits: Mutex::new(Some(sender)),
            committer: Mutex::new(Some(committer)),
            admin_writes: tokio::sync::Mutex::new(()),
            audit_sequence: std::sync::atomic::AtomicU64::new(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)),
            failed,
        })
    }

    /// Writes one value outside the group committer, durably: for rare admin writes.
    fn put_durably(&self, keyspace: &Keyspace, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        batch.insert(keyspace, key, value);
        self.write_durably(batch)
    }

    fn write_durably(&self, batch: OwnedWriteBatch) -> Result<(), StoreError> {
        let outcome = batch.commit().and_then(|()| self.db.persist(PersistMode::SyncAll)).map_err(unavailable);
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
        if self.tables.devices.contains_key(key).map_err(unavailable)? {
            return Err(StoreError::AlreadyExists);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.tables.devices, key, encode(enrolment));
        batch.insert(&self.tables.org_devices, keys::pair(&enrolment.org_id, &enrolment.device_id), key);
        self.write_durably(batch)
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
            self.put_durably(&self.tables.devices, device_id.as_bytes(), encode(&enrolment))?;
        }
        Ok(Some(enrolment))
    }

    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        Ok(read(&self.tables.progress, device_id.as_bytes())?.unwrap_or_default())
    }

    async fn devices_waiting_for_evaluation(&self) -> Result<Vec<String>, StoreError> {
        let mut waiting = Vec::new();
        for item in self.tables.progress.iter() {
            let (device_id, value) = item.into_inner().map_err(unavailable)?;
            if decode::<DeviceProgress>(&value)?.evaluation.waiting_since.is_some() {
                waiting.push(String::from_utf8_lossy(&device_id).into_owned());
            }
        }
        Ok(waiting)
    }

    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError> {
        seqs.iter().map(|&seq| read(&self.tables.seqs, &keys::seq(device_id, seq))).collect()
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(failed_earlier());
        }
        let Commit { device, timeline, conflicts, audit, stats, live } = commit;
        // Room for the statistics the committer adds.
        let capacity = device.as_ref().map_or(0, |device| device.entries.len() + 1) + timeline.len() * 2 + conflicts.len() * 4 + audit.len() * 2 + 2;
        let mut batch = OwnedWriteBatch::with_capacity(self.db.clone(), capacity);
        if let Some(device) = device {
            for entry in &device.entries {
                batch.insert(&self.tables.seqs, keys::seq(&device.device_id, entry.seq()), encode(entry));
            }
            batch.insert(&self.tables.progress, device.device_id.as_bytes(), encode(&device.progress));
        }
        let mut partitions = std::collections::HashSet::new();
        for entry in timeline {
            let value = fjall::UserValue::from(encode(entry));
            for (day, at) in timeline_positions(entry) {
                let key = keys::timeline(&entry.org_id, &entry.employee_id, day, at, &entry.device_id, entry.seq);
                batch.insert(&self.tables.timeline, key, value.clone());
                partitions.insert(keys::timeline_partition(&entry.org_id, &entry.employee_id, day));
            }
        }
        for partition in partitions {
            batch.insert(&self.tables.timeline_days, partition, []);
        }
        for conflict in conflicts {
            batch.insert(&self.tables.conflicts, conflict.id.as_bytes(), encode(conflict));
            batch.insert(&self.tables.conflicts_by_org, keys::conflict_of_org(&conflict.org_id, conflict.detected_at, &conflict.id), conflict.id.as_bytes());
            let device = &conflict.device_record.device_id;
            let other_device = conflict.server_record.as_ref().map(|record| &record.device_id).filter(|other| *other != device);
            for device_id in std::iter::once(device).chain(other_device) {
                batch.insert(&self.tables.conflicts_by_device, keys::conflict_of_device(device_id, &conflict.id), conflict.id.as_bytes());
            }
        }
        for event in audit {
            let (value, unique) = (encode(event), self.audit_sequence.fetch_add(1, Ordering::Relaxed));
            batch.insert(&self.tables.audit_by_device, keys::timed(&event.device_id, event.at, unique), value.clone());
            batch.insert(&self.tables.audit_by_org, keys::timed(&event.org_id, event.at, unique), value);
        }

        let sender = self.commits.lock().expect("commit sender lock").clone().ok_or_else(closed)?;
        let (done, durable) = oneshot::channel();
        let records = device.as_ref().map_or(0, |device| device.entries.len());
        sender.send(PendingCommit { batch, stats: stats.clone(), records, live: *live, done }).await.map_err(|_| closed())?;
        durable.await.map_err(|_| closed())?
    }

    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError> {
        let partition = keys::timeline_partition(org_id, employee_id, day);
        if !self.tables.timeline_days.contains_key(&partition).map_err(unavailable)? {
            return Ok(Vec::new());
        }
        self.tables
            .timeline
            .prefix(partition)
            .map(|item| decode(&item.into_inner().map_err(unavailable)?.1))
            .collect()
    }

    async fn timeline_days(&self, org_id: &str, employee_id: &str) -> Result<Vec<UtcDay>, StoreError> {
        self.tables
            .timeline_days
            .prefix(keys::employee(org_id, employee_id))
            .map(|item| {
                let partition = item.key().map_err(unavailable)?;
                keys::day_of_partition(&partition).ok_or_else(|| StoreError::Corrupt("a timeline day marker is too short".into()))
            })
            .collect()
    }

    async fn conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        read(&self.tables.conflicts, conflict_id.as_bytes())
    }

    async fn conflicts(&self, org_id: &str, open: Option<bool>, page: Page<'_>) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError> {
        let mut found = Vec::with_capacity(page.limit);
        for item in scan_after(&self.tables.conflicts_by_org, &keys::text_prefix(org_id), page.after) {
            let (key, conflict_id) = item.into_inner().map_err(unavailable)?;
            let conflict: ConflictRecord = read(&self.tables.conflicts, &conflict_id)?
                .ok_or_else(|| StoreError::Corrupt(format!("conflict {} is listed but not stored", String::from_utf8_lossy(&conflict_id))))?;
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
        let mut open = Vec::new();
        for item in self.tables.conflicts_by_device.prefix(keys::text_prefix(device_id)) {
            let (_, conflict_id) = item.into_inner().map_err(unavailable)?;
            if let Some(conflict) = read::<ConflictRecord>(&self.tables.conflicts, &conflict_id)?.filter(ConflictRecord::is_open) {
                open.push(conflict);
            }
        }
        Ok(open)
    }

    async fn audit(&self, scope: AuditScope<'_>, since: i64, until: i64, page: Page<'_>) -> Result<Vec<(AuditEvent, Cursor)>, StoreError> {
        let (keyspace, partition) = match scope {
            AuditScope::Device(device_id) => (&self.tables.audit_by_device, device_id),
            AuditScope::Org(org_id) => (&self.tables.audit_by_org, org_id),
        };
        let (from, end) = (keys::timed_from(partition, since), keys::timed_from(partition, until.saturating_add(1)));
        // A cursor counts only inside this partition's window: one from another listing
        // must not read someone else's trail.
        let after = page.after.filter(|after| *after >= from.as_slice() && *after < end.as_slice());
        let start = after.map(<[u8]>::to_vec).unwrap_or(from);
        let bound = if after.is_some() { std::ops::Bound::Excluded(fjall::UserKey::from(start)) } else { std::ops::Bound::Included(fjall::UserKey::from(start)) };
        let mut found = Vec::with_capacity(page.limit);
        for item in keyspace.range((bound, std::ops::Bound::Excluded(fjall::UserKey::from(end)))).take(page.limit) {
            let (key, value) = item.into_inner().map_err(unavailable)?;
            found.push((decode(&value)?, key.to_vec()));
        }
        Ok(found)
    }

    async fn sync_totals(&self, org_id: &str, since: i64) -> Result<SyncTotals, StoreError> {
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
        self.put_durably(&self.tables.orgs, org_id.as_bytes(), encode(settings))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.commits.lock().expect("commit sender lock").is_none() {
            return Err(closed());
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err(failed_earlier());
        }
        self.tables.devices.contains_key(b"").map(drop).map_err(unavailable)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Dropping the sender lets the committer finish what is queued, then exit.
        drop(self.commits.lock().expect("commit sender lock").take());
        let committer = self.committer.lock().expect("committer lock").take();
        if let Some(committer) = committer {
            tokio::task::spawn_blocking(move || committer.join())
                .await
                .map_err(unavailable)?
                .map_err(|_| StoreError::Unavailable("the committer thread panicked".into()))?;
        }
        self.db.persist(PersistMode::SyncAll).map_err(unavailable)
    }
}

/// The partitions a timeline entry is written to, with its clustering time in each: its
/// own day at `recorded_at`, and for a leave request also every day it covers, first.
fn timeline_positions(entry: &TimelineEntry) -> Vec<(UtcDay, i64)> {
    let mut positions = vec![(UtcDay::of_unix_ms(entry.recorded_at), entry.recorded_at)];
    if let Some((from, to)) = entry.leave {
        let mut day = from;
        while day <= to {
            positions.push((day, day.start_unix_ms()));
            day = day.next();
        }
    }
    positions
}

/// The items of a partition (`prefix`) that come after the key `after`.
fn scan_after(keyspace: &Keyspace, prefix: &[u8], after: Option<&[u8]>) -> fjall::Iter {
    match after.filter(|after| after.starts_with(prefix)) {
        Some(after) => {
            let (_, end) = fjall::util::prefix_to_range(prefix);
            keyspace.range((std::ops::Bound::Excluded(fjall::UserKey::from(after)), end))
        }
        None => keyspace.prefix(prefix),
    }
}

/// The thread that commits queued batches in groups, with one fsync per group.
struct Committer {
    db: Database,
    tables: Tables,
    max_group: usize,
    max_group_records: usize,
    /// Commits taken off the channel and waiting, at most this many.
    max_waiting: usize,
    metrics: StoreMetrics,
    failed: Arc<AtomicBool>,
}

/// Commits taken off the channel, live ones apart so they go first.
struct Waiting<T> {
    live: VecDeque<T>,
    backlog: VecDeque<T>,
}

/// What the group being written holds so far.
#[derive(Debug, Default)]
struct Group {
    commits: usize,
    records: usize,
    live: bool,
}

/// How much one fsync may cover.
#[derive(Debug, Clone, Copy)]
struct GroupCaps {
    commits: usize,
    records: usize,
}

impl<T> Waiting<T> {
    fn new() -> Self {
        Waiting { live: VecDeque::new(), backlog: VecDeque::new() }
    }

    fn len(&self) -> usize {
        self.live.len() + self.backlog.len()
    }

    fn push(&mut self, commit: T, live: bool) {
        if live { &mut self.live } else { &mut self.backlog }.push_back(commit);
    }

    /// The commit to write next into `group`, if the group takes another: any live one
    /// first; backlog only while no live commit is in the group (which is then fsynced
    /// at once) and the caps leave room. The first commit of a group always goes.
    fn next(&mut self, group: &Group, caps: GroupCaps) -> Option<T> {
        let full = group.commits >= caps.commits || (group.commits > 0 && group.records >= caps.records);
        if full {
            return None;
        }
        self.live.pop_front().or_else(|| if group.live { None } else { self.backlog.pop_front() })
    }
}

impl Waiting<PendingCommit> {
    fn take(&mut self, commit: PendingCommit) {
        let live = commit.live;
        self.push(commit, live);
    }
}

impl Committer {
    /// Writes groups until the channel closes. A group is the commits written before
    /// one fsync. Between two commits the committer looks for live ones: a live commit
    /// is written next and the group ends with it, so its wait is one commit's write
    /// and an fsync, never a whole group of backlog.
    fn run(self, mut queue: mpsc::Receiver<PendingCommit>) {
        let caps = GroupCaps { commits: self.max_group, records: self.max_group_records };
        let mut waiting = Waiting::new();
        let mut answers = Vec::with_capacity(self.max_group);
        loop {
            if waiting.len() == 0 {
                match queue.blocking_recv() {
                    Some(first) => waiting.take(first),
                    None => return,
                }
            }
            let started = Instant::now();
            let (mut group, mut outcome) = (Group::default(), Ok(()));
            loop {
                while waiting.len() < self.max_waiting {
                    let Ok(queued) = queue.try_recv() else { break };
                    waiting.take(queued);
                }
                let Some(PendingCommit { batch, stats, records, live, done }) = waiting.next(&group, caps) else { break };
                group = Group { commits: group.commits + 1, records: group.records + records, live: group.live || live };
                answers.push(done);
                outcome = self.write(batch, stats);
                if outcome.is_err() {
                    break;
                }
            }
            self.metrics.queue_depth.set((queue.len() + waiting.len()) as i64);
            self.metrics.write_buffer.set(self.db.write_buffer_size() as i64);
            let outcome = outcome.and_then(|()| self.db.persist(PersistMode::SyncData).map_err(unavailable));
            self.metrics.observe_group(answers.len(), started.elapsed(), outcome.is_ok());
            if let Err(error) = &outcome {
                self.failed.store(true, Ordering::Relaxed);
                tracing::error!(%error, commits = answers.len(), "group commit failed; nothing in it is acked");
            }
            for done in answers.drain(..) {
                let _ = done.send(outcome.clone());
            }
        }
    }

    /// Writes one commit's batch with its counts added to the statistics, atomically: a
    /// crash leaves all of it or none of it, so the statistics always count exactly the
    /// records stored. Durable only after the group's fsync.
    fn write(&self, mut batch: OwnedWriteBatch, stats: Vec<SyncCounts>) -> Result<(), StoreError> {
        self.add_stats(stats, &mut batch)?;
        batch.commit().map_err(unavailable)
    }

    /// Adds a commit's counts to the hourly org totals and the device totals. The
    /// committer is their only writer, so reading and adding loses nothing.
    fn add_stats(&self, stats: Vec<SyncCounts>, batch: &mut OwnedWriteBatch) -> Result<(), StoreError> {
        // Summed first: the batch's own writes are not read back.
        let mut sums: std::collections::HashMap<(bool, Vec<u8>), SyncTotals> = std::collections::HashMap::new();
        for counts in stats {
            sums.entry((true, keys::timed_from(&counts.org_id, hour_of(counts.at)))).or_default().add(&counts.totals);
            sums.entry((false, counts.device_id.into_bytes())).or_default().add(&counts.totals);
        }
        for ((by_org, key), sum) in sums {
            let keyspace = if by_org { &self.tables.stats_by_org_hour } else { &self.tables.stats_by_device };
            let mut totals: SyncTotals = read(keyspace, &key)?.unwrap_or_default();
            totals.add(&sum);
            batch.insert(keyspace, key, encode(&totals));
        }
        Ok(())
    }
}

/// The first millisecond of the UTC hour of `at`.
fn hour_of(at: i64) -> i64 {
    at.div_euclid(3_600_000) * 3_600_000
}

/// Stored values are MessagePack arrays (struct fields by position): half the bytes
/// of named maps on the hottest path. A field may only ever be appended, with
/// `#[serde(default)]`, so that values written before still read.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("stored types always encode")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn read<T: DeserializeOwned>(keyspace: &Keyspace, key: &[u8]) -> Result<Option<T>, StoreError> {
    keyspace.get(key).map_err(unavailable)?.map(|bytes| decode(&bytes)).transpose()
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
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

    fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
        let metrics = StoreMetrics::register(&prometheus::Registry::new()).unwrap();
        EmbeddedStore::open(EmbeddedStoreOptions::new(dir.path()), metrics).unwrap()
    }

    /// The commits a committer would write into one group, in order.
    fn group_of(waiting: &mut Waiting<(&'static str, usize, bool)>, caps: GroupCaps) -> Vec<&'static str> {
        let mut group = Group::default();
        let mut written = Vec::new();
        while let Some((name, records, live)) = waiting.next(&group, caps) {
            group = Group { commits: group.commits + 1, records: group.records + records, live: group.live || live };
            written.push(name);
        }
        written
    }

    fn waiting(commits: &[(&'static str, usize, bool)]) -> Waiting<(&'static str, usize, bool)> {
        let mut waiting = Waiting::new();
        for &commit in commits {
            waiting.push(commit, commit.2);
        }
        waiting
    }

    #[test]
    fn a_live_commit_goes_first_and_ends_its_group() {
        let caps = GroupCaps { commits: 100, records: 1_000 };
        let mut queue = waiting(&[("b1", 300, false), ("l1", 1, true), ("b2", 300, false), ("l2", 1, true)]);
        assert_eq!(group_of(&mut queue, caps), vec!["l1", "l2"], "live commits waiting go together, no backlog after them");
        assert_eq!(group_of(&mut queue, caps), vec!["b1", "b2"]);
    }

    #[test]
    fn backlog_groups_stop_at_the_caps_and_a_large_commit_goes_alone() {
        let mut queue = waiting(&[("big", 5_000, false), ("b1", 300, false), ("b2", 300, false), ("b3", 300, false), ("b4", 300, false)]);
        let caps = GroupCaps { commits: 100, records: 600 };
        assert_eq!(group_of(&mut queue, caps), vec!["big"]);
        assert_eq!(group_of(&mut queue, caps), vec!["b1", "b2"]);
        let caps = GroupCaps { commits: 1, records: 600 };
        assert_eq!(group_of(&mut queue, caps), vec!["b3"]);
        let mut live = waiting(&[("l1", 400, true), ("l2", 400, true), ("l3", 400, true)]);
        assert_eq!(group_of(&mut live, GroupCaps { commits: 100, records: 600 }), vec!["l1", "l2"], "live commits are capped too");
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
        let write = super::super::DeviceWrite { device_id: "dev-reopen".into(), entries: vec![], progress: DeviceProgress::default() };
        assert!(store.commit(&Commit { device: Some(write), ..Commit::default() }).await.is_err(), "a closed store refuses writes");
        drop(store);
        let reopened = open(&dir);
        assert_eq!(reopened.device_progress("dev-reopen").await.unwrap().received.next_seq(), 2);
    }
}
