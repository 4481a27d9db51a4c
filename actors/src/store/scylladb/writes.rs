//! A commit's writes: which rows, grouped how, and in which order.
//!
//! Rows of one partition go in unlogged batches (one mutation on each replica); the
//! rest run concurrently. The order is the trait's contract: a commit that finds
//! conflicts writes them first (their index rows, then the conflicts), so no record's
//! status is ever changed by a conflict that is not stored; then every other row; then
//! the versions of the employees placed are advanced, after their rows, so a gateway
//! that reads a version finds the rows of every commit that advanced to it (a
//! placement made on a timeline that moved meanwhile fails here, `ownership.rs`);
//! then, once all are acknowledged, the device's progress, the commit point, if the
//! device's epoch is still the committer's; and last its tail, the audit entries and
//! statistics, so that they count only commits that took effect. The progress row
//! carries the tail until the next commit, and a claim of the device writes it again
//! (`ownership.rs`): an owner killed between the point and the tail loses none of it.

use super::errors::cql_error;
use super::ScyllaStore;
use crate::store::codec::encode;
use crate::store::{waiting_bucket, write_point, AuditEvent, Commit, ConflictRecord, StoreError, SyncCounts};
use futures_util::{StreamExt, TryStreamExt};
use otg_schema::UtcDay;
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::Semaphore;

/// Seqs per `seqs` partition: a batch (seqs in order) touches one or two.
pub(super) const SEQ_BUCKET: u64 = 4096;
/// Most statements in one unlogged batch of one partition: small enough for any
/// cluster's batch size limits, large enough that a big commit is few round trips.
const BATCH_ROWS: usize = 64;
/// Writes of one commit in flight at once.
const CONCURRENT_WRITES: usize = 64;

/// One write, running.
type PendingWrite<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Writes to run together, each holding a permit of the store's in-flight limit.
pub(super) struct Writes<'a> {
    session: &'a Session,
    in_flight: &'a Semaphore,
    pending: Vec<PendingWrite<'a>>,
}

impl<'a> Writes<'a> {
    pub(super) fn new(store: &'a ScyllaStore) -> Self {
        Writes { session: &store.session, in_flight: &store.writes_in_flight, pending: Vec::new() }
    }

    pub(super) fn one(&mut self, statement: &'a PreparedStatement, values: impl SerializeRow + Send + 'a) {
        let (session, in_flight) = (self.session, self.in_flight);
        self.pending.push(Box::pin(async move {
            let _permit = in_flight.acquire().await.map_err(|_| closed())?;
            write_point()?;
            let outcome = session.execute_unpaged(statement, values).await;
            outcome.map(drop).map_err(|error| cql_error(&error, statement.get_statement()))
        }));
    }

    /// Rows of one partition, in unlogged batches of at most `BATCH_ROWS`.
    pub(super) fn batched<R: SerializeRow + Send + Sync + 'a>(
        &mut self,
        statement: &'a PreparedStatement,
        rows: Vec<R>,
    ) {
        let (session, in_flight) = (self.session, self.in_flight);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<R> = rows.by_ref().take(BATCH_ROWS).collect();
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..chunk.len() {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            batch.set_consistency(statement.get_consistency().unwrap_or_default());
            self.pending.push(Box::pin(async move {
                let _permit = in_flight.acquire().await.map_err(|_| closed())?;
                write_point()?;
                let outcome = session.batch(&batch, chunk).await;
                outcome.map(drop).map_err(|error| cql_error(&error, statement.get_statement()))
            }));
        }
    }

    /// Runs every write; the first failure fails the whole (the caller retries it all).
    pub(super) async fn run(self) -> Result<(), StoreError> {
        futures_util::stream::iter(self.pending).buffer_unordered(CONCURRENT_WRITES).try_collect::<()>().await
    }
}

fn closed() -> StoreError {
    StoreError::Failed("the store is closed".into())
}

impl ScyllaStore {
    /// Writes everything in `commit` in the contract's order: its rows, the progress,
    /// then the tail.
    pub(super) async fn write_commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if !commit.conflicts.is_empty() {
            let mut indexes = Writes::new(self);
            self.conflict_index_writes(&commit.conflicts, &mut indexes);
            indexes.run().await?;
            let mut detections = Writes::new(self);
            for conflict in &commit.conflicts {
                let detection = ConflictRecord { resolution: None, ..conflict.clone() };
                detections.one(&self.statements.insert_conflict, (conflict.id.as_str(), encode(&detection)));
            }
            detections.run().await?;
        }
        let mut rows = Writes::new(self);
        self.record_writes(commit, &mut rows);
        if commit.device.is_none() {
            // No commit point: the entries and counts are the commit (a refused batch).
            self.audit_writes(&commit.audit, &mut rows);
            self.stats_writes(&commit.stats, true, &mut rows);
        }
        rows.run().await?;
        if !commit.employees.is_empty() {
            self.advance_employees(&commit.employees, commit.id).await?;
        }
        if let Some(device) = &commit.device {
            self.write_progress(device, &CommitTail::encode(&commit.audit, &commit.stats)).await?;
            if device.was_waiting && device.progress.evaluation.waiting_since.is_none() {
                let mut unlist = Writes::new(self);
                unlist.one(&self.statements.delete_waiting_device, waiting_row(&device.device_id));
                unlist.run().await?;
            }
            self.write_tail(&commit.audit, &commit.stats).await?;
        }
        Ok(())
    }

    /// A device commit's audit entries and statistics, written after its commit point.
    pub(super) async fn write_tail(&self, audit: &[AuditEvent], stats: &[SyncCounts]) -> Result<(), StoreError> {
        let mut tail = Writes::new(self);
        self.audit_writes(audit, &mut tail);
        // The device's own counts travel in its progress.
        self.stats_writes(stats, false, &mut tail);
        tail.run().await
    }

    /// The seqs and the timeline entries, each partition's rows batched. An entry
    /// written twice in one commit (placed, then superseded) is written once, as last
    /// given: rows of one batch share a timestamp, so both would otherwise race.
    fn record_writes<'a>(&'a self, commit: &'a Commit, writes: &mut Writes<'a>) {
        let statements = &self.statements;
        if let Some(device) = &commit.device {
            let mut buckets: BTreeMap<i64, Vec<_>> = BTreeMap::new();
            for entry in &device.entries {
                let (seq, bucket) = (entry.seq() as i64, (entry.seq() / SEQ_BUCKET) as i64);
                let row = (device.device_id.as_str(), bucket, seq, encode(entry), device.epoch);
                buckets.entry(bucket).or_default().push(row);
            }
            for rows in buckets.into_values() {
                writes.batched(&statements.insert_seq, rows);
            }
            // Before the commit point: a device listed that does not wait yet (its
            // commit cut short) only gets a wake-up that finds nothing due.
            if device.progress.evaluation.waiting_since.is_some() {
                writes.one(&statements.insert_waiting_device, waiting_row(&device.device_id));
            }
        }
        // (org, employee, day) -> (at, device, seq) -> the entry.
        type Rows<'p> = BTreeMap<(i64, &'p str, i64), Vec<u8>>;
        let mut partitions: BTreeMap<(&str, &str, i32), Rows> = BTreeMap::new();
        for entry in &commit.timeline {
            let mut value = encode(entry);
            let (org, employee, device) = (&*entry.org_id, &*entry.employee_id, &*entry.device_id);
            let mut positions = entry.positions().into_iter().peekable();
            while let Some((day, at)) = positions.next() {
                // A copy only for a leave's other days: most entries stand in one.
                let value = if positions.peek().is_some() { value.clone() } else { std::mem::take(&mut value) };
                partitions.entry((org, employee, day.0)).or_default().insert((at, device, entry.seq as i64), value);
            }
        }
        // The version each employee's decisions advance it to: their rows' timestamp.
        let versions: BTreeMap<(&str, &str), i64> = commit
            .employees
            .iter()
            .map(|advance| ((advance.org_id.as_str(), advance.employee_id.as_str()), advance.new_version))
            .collect();
        for ((org, employee, day), rows) in partitions {
            writes.one(&statements.insert_timeline_day, (org, employee, day));
            let rows =
                rows.into_iter().map(move |((at, device, seq), value)| (org, employee, day, at, device, seq, value));
            match versions.get(&(org, employee)) {
                Some(&version) => {
                    let rows = rows.map(|row| (row.0, row.1, row.2, row.3, row.4, row.5, row.6, version)).collect();
                    writes.batched(&statements.insert_timeline_at, rows);
                }
                // No decision placed them (conflict detection is off): written once, as active.
                None => writes.batched(&statements.insert_timeline, rows.collect()),
            }
        }
    }

    /// A conflict's index rows: where the lists and the device view find it.
    fn conflict_index_writes<'a>(&'a self, conflicts: &'a [ConflictRecord], writes: &mut Writes<'a>) {
        let statements = &self.statements;
        let mut months = BTreeSet::new();
        for conflict in conflicts {
            let (id, month) = (conflict.id.as_str(), month_of(conflict.detected_at));
            writes.one(&statements.insert_conflict_of_org, (conflict.org_id.as_str(), month, conflict.detected_at, id));
            months.insert((conflict.org_id.as_str(), month));
            for device_id in conflict.device_ids() {
                writes.one(&statements.insert_conflict_of_device, (device_id, id));
            }
        }
        for month in months {
            writes.one(&statements.insert_conflict_month, month);
        }
    }

    /// Audit entries by device and by org, each partition's batched, and the days the
    /// trails have entries in.
    pub(super) fn audit_writes<'a>(&'a self, audit: &'a [AuditEvent], writes: &mut Writes<'a>) {
        let statements = &self.statements;
        let (mut by_device, mut by_org): (BTreeMap<_, Vec<_>>, BTreeMap<_, Vec<_>>) = Default::default();
        let mut days = BTreeSet::new();
        for event in audit {
            let value = encode(event);
            let (key, day) = (event.key() as i64, UtcDay::of_unix_ms(event.at).0);
            let (device, org) = (event.device_id.as_str(), event.org_id.as_str());
            by_device.entry((device, day)).or_default().push((device, day, event.at, key, value.clone()));
            by_org.entry((org, day)).or_default().push((org, day, event.at, device, key, value));
            days.insert(("d", device, day));
            days.insert(("o", org, day));
        }
        for rows in by_device.into_values() {
            writes.batched(&statements.insert_audit_of_device, rows);
        }
        for rows in by_org.into_values() {
            writes.batched(&statements.insert_audit_of_org, rows);
        }
        for day in days {
            writes.one(&statements.insert_audit_day, day);
        }
    }

    /// Each counted event's row by org and day; and by device and year for counts no
    /// device commit carries in its progress (refused batches).
    fn stats_writes<'a>(&'a self, stats: &'a [SyncCounts], by_device_too: bool, writes: &mut Writes<'a>) {
        let (mut by_org, mut by_device): (BTreeMap<_, Vec<_>>, BTreeMap<_, Vec<_>>) = Default::default();
        for SyncCounts { org_id, device_id, at, key, totals } in stats {
            let (hour, key, totals) = (at.div_euclid(3_600_000) * 3_600_000, *key as i64, encode(totals));
            let (day, year) = (UtcDay::of_unix_ms(*at).0, year_of(*at));
            let (org, device) = (org_id.as_str(), device_id.as_str());
            if by_device_too {
                by_device.entry((device, year)).or_default().push((device, year, *at, key, totals.clone()));
            }
            by_org.entry((org, day)).or_default().push((org, day, hour, device, key, totals));
        }
        for rows in by_org.into_values() {
            writes.batched(&self.statements.insert_sync_stats, rows);
        }
        for rows in by_device.into_values() {
            writes.batched(&self.statements.insert_device_stats, rows);
        }
    }
}

/// A device commit's tail as its progress row keeps it (`device_state.unfinished`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct CommitTail {
    pub audit: Vec<AuditEvent>,
    pub stats: Vec<SyncCounts>,
}

impl CommitTail {
    /// The tail of a commit, encoded as it reads back: without copying the entries.
    pub(super) fn encode(audit: &[AuditEvent], stats: &[SyncCounts]) -> Vec<u8> {
        encode(&(audit, stats))
    }
}

/// A device's row of `waiting_devices`: its bucket and its id.
fn waiting_row(device_id: &str) -> (i32, &str) {
    (i32::from(waiting_bucket(device_id)), device_id)
}

/// Months since 1970-01 of a unix ms time, UTC.
pub(super) fn month_of(at: i64) -> i32 {
    use chrono::Datelike;
    let date = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    (date.year() - 1970) * 12 + date.month0() as i32
}

pub(super) fn year_of(at: i64) -> i32 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(at).unwrap_or_default().year()
}
