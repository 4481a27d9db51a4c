//! The ScyllaDB store: the `Store` model on a CQL cluster (ScyllaDB in production,
//! Apache Cassandra 5.0 in this project's tests), for many gateways on one cluster.
//!
//! One session, prepared statements, token-aware routing, the configured consistency
//! (`LOCAL_QUORUM` by default) on every read and write. A commit writes its rows
//! concurrently, rows of one partition in one unlogged batch, and the device's
//! progress last, once every other row is acknowledged: the commit point of
//! `Store::commit`. Conditional writes (LWT) only where two writers race for one
//! outcome: enrolment, revocation, a conflict's resolution. docs/scylla.md has the
//! data model table by table.

mod errors;
mod schema;
mod statements;

pub use schema::{valid_keyspace, Replication};

use super::codec::{decode, encode};
use super::{
    AdminResolution, AuditEvent, AuditKind, AuditScope, Commit, ConflictRecord, Cursor, DeviceEnrolment,
    DeviceProgress, Page, Resolved, SeqEntry, Store, StoreError, SyncCounts, SyncTotals, TimelineEntry,
};
use async_trait::async_trait;
use chrono::Datelike;
use errors::{cql_error, outcome_unknown};
use futures_util::{StreamExt, TryStreamExt};
use otg_schema::{OrgSettings, UtcDay};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use statements::Statements;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Seqs per `seqs` partition: a batch (seqs in order) touches one or two.
const SEQ_BUCKET: u64 = 4096;
/// Most statements in one unlogged batch of one partition: small enough for any
/// cluster's batch size limits, large enough that a big commit is few round trips.
const BATCH_ROWS: usize = 64;
/// Writes of one commit in flight at once.
const CONCURRENT_WRITES: usize = 64;
/// Rows a full read asks for per page.
const PAGE_ROWS: i32 = 1000;
/// The first year a device's statistics can be in (otg's first release).
const FIRST_STATS_YEAR: i32 = 2025;

/// Where and how to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaStoreOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Every read and write (`LOCAL_QUORUM` by default): an ack means the write is on
    /// that many replicas.
    pub consistency: Consistency,
    /// Route requests to this data centre's nodes only (token-aware within it).
    pub local_datacenter: Option<String>,
    /// How long one request may take before it counts as failed (and is retried if
    /// idempotent, or answered 503).
    pub request_timeout: Duration,
}

impl ScyllaStoreOptions {
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        ScyllaStoreOptions {
            nodes,
            keyspace: keyspace.into(),
            consistency: Consistency::LocalQuorum,
            local_datacenter: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Statements,
    _runtime: CqlRuntime,
}

/// The driver's connections and their I/O run here, on threads of their own, so that
/// no HTTP worker or actor thread carries the cluster's traffic. Dropped from async
/// code, so it shuts down without waiting.
struct CqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for CqlRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects to the cluster (without a keyspace) and applies the schema: what
/// `otg-gateway migrate` runs.
pub async fn migrate(options: &ScyllaStoreOptions, replication: &Replication) -> Result<Vec<i32>, StoreError> {
    let (session, _runtime) = connect(options).await?;
    schema::migrate(&session, &options.keyspace, replication).await
}

/// A session on its own runtime.
async fn connect(options: &ScyllaStoreOptions) -> Result<(Arc<Session>, CqlRuntime), StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("otg-cql")
        .enable_all()
        .build()
        .map_err(|error| StoreError::Failed(format!("start the CQL runtime: {error}")))?;
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(datacenter) = &options.local_datacenter {
        policy = policy.prefer_datacenter(datacenter.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(options.consistency)
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    let builder = SessionBuilder::new()
        .known_nodes(&options.nodes)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle());
    let runtime = CqlRuntime(Some(runtime));
    let spawned = runtime.0.as_ref().map(|runtime| runtime.spawn(async move { builder.build().await }));
    let session = spawned
        .expect("the runtime is there until dropped")
        .await
        .map_err(|error| StoreError::Failed(error.to_string()))?
        .map_err(|error| StoreError::Unavailable(format!("connect to {:?}: {error}", options.nodes)))?;
    Ok((Arc::new(session), runtime))
}

impl ScyllaStore {
    /// Connects, checks that the keyspace has the schema this build needs, and
    /// prepares every statement.
    pub async fn open(options: &ScyllaStoreOptions) -> Result<Self, StoreError> {
        schema::check_keyspace(&options.keyspace)?;
        let (session, runtime) = connect(options).await?;
        session.use_keyspace(&options.keyspace, false).await.map_err(|error| {
            StoreError::Failed(format!(
                "keyspace {}: {error}; run `otg-gateway migrate` (with the same store settings) first",
                options.keyspace
            ))
        })?;
        schema::check_version(&session, &options.keyspace).await?;
        let statements = Statements::prepare(&session, options.consistency).await?;
        Ok(ScyllaStore { session, statements, _runtime: runtime })
    }

    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session.execute_unpaged(statement, values).await.map_err(|error| cql_error(&error, "CQL"))
    }

    /// The rows of a one-page query (the statement's own `LIMIT` bounds it).
    async fn rows<T>(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<T>, StoreError>
    where
        T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        rows_of(self.execute(statement, values).await?)
    }

    /// Every row of a query, page by page.
    async fn all_rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let mut statement = statement.clone();
        statement.set_page_size(PAGE_ROWS);
        let (mut rows, mut paging) = (Vec::new(), PagingState::start());
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&statement, values.clone(), paging)
                .await
                .map_err(|error| cql_error(&error, "CQL"))?;
            rows.extend(rows_of::<T>(result)?);
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(rows),
            }
        }
    }

    /// A conditional write: whether it applied. A write whose outcome is unknown (a
    /// timeout) is reported as such, for the caller to read back at serial consistency.
    async fn conditional(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Conditional, StoreError> {
        match self.session.execute_unpaged(statement, values).await {
            Ok(result) => Ok(if applied(result)? { Conditional::Applied } else { Conditional::NotApplied }),
            Err(error) if outcome_unknown(&error) => Ok(Conditional::Unknown(Box::new(error))),
            Err(error) => Err(cql_error(&error, "conditional write")),
        }
    }

    async fn read_device(&self, device_id: &str, serial: bool) -> Result<Option<DeviceEnrolment>, StoreError> {
        let statement = if serial { &self.statements.select_device_serial } else { &self.statements.select_device };
        let rows: Vec<DeviceRow> = self.rows(statement, (device_id,)).await?;
        rows.into_iter()
            .next()
            .map(|(org_id, employee_id, secret, enrolled_at, revoked_at)| {
                let secret =
                    secret.try_into().map_err(|_| StoreError::Corrupt(format!("device {device_id}: secret")))?;
                Ok(DeviceEnrolment {
                    device_id: device_id.into(),
                    org_id,
                    employee_id,
                    secret,
                    enrolled_at,
                    revoked_at,
                })
            })
            .transpose()
    }

    async fn read_conflict(&self, conflict_id: &str, serial: bool) -> Result<Option<ConflictRecord>, StoreError> {
        let statement = if serial { &self.statements.select_conflict_serial } else { &self.statements.select_conflict };
        let rows: Vec<ConflictRow> = self.rows(statement, (conflict_id,)).await?;
        // A row with only a resolution is a resolution racing a detection's cut
        // commit: not a conflict until its detection is written.
        let Some((Some(detected), resolution)) = rows.into_iter().next() else { return Ok(None) };
        let mut conflict: ConflictRecord = decode(&detected)?;
        conflict.resolution = resolution.map(|bytes| decode(&bytes)).transpose()?;
        Ok(Some(conflict))
    }

    /// Files audit entries, with the days their trails have entries in.
    fn audit_writes<'a>(&'a self, audit: &'a [AuditEvent], writes: &mut Writes<'a>) {
        let statements = &self.statements;
        for event in audit {
            let (value, key, day) = (encode(event), event.key() as i64, UtcDay::of_unix_ms(event.at).0);
            let (device, org) = (event.device_id.as_str(), event.org_id.as_str());
            writes.one(&statements.insert_audit_of_device, (device, day, event.at, key, value.clone()));
            writes.one(&statements.insert_audit_of_org, (org, day, event.at, device, key, value));
            writes.one(&statements.insert_audit_day, ("d", device, day));
            writes.one(&statements.insert_audit_day, ("o", org, day));
        }
    }

    /// Every write of `commit` but its progress.
    fn writes_of<'a>(&'a self, commit: &'a Commit) -> Writes<'a> {
        let statements = &self.statements;
        let mut writes = Writes::new(self.session.as_ref());
        if let Some(device) = &commit.device {
            let mut buckets: BTreeMap<i64, Vec<_>> = BTreeMap::new();
            for entry in &device.entries {
                let (seq, bucket) = (entry.seq() as i64, (entry.seq() / SEQ_BUCKET) as i64);
                buckets.entry(bucket).or_default().push((device.device_id.as_str(), bucket, seq, encode(entry)));
            }
            for rows in buckets.into_values() {
                writes.batched(&statements.insert_seq, rows);
            }
        }
        let mut partitions: BTreeMap<(&str, &str, i32), Vec<_>> = BTreeMap::new();
        for entry in &commit.timeline {
            let value = encode(entry);
            for (day, at) in entry.positions() {
                let row = (
                    &*entry.org_id,
                    &*entry.employee_id,
                    day.0,
                    at,
                    &*entry.device_id,
                    entry.seq as i64,
                    value.clone(),
                    status_name(entry),
                );
                partitions.entry((&*entry.org_id, &*entry.employee_id, day.0)).or_default().push(row);
            }
        }
        for ((org, employee, day), rows) in partitions {
            writes.one(&statements.insert_timeline_day, (org, employee, day));
            writes.batched(&statements.insert_timeline, rows);
        }
        for conflict in &commit.conflicts {
            let (id, month) = (conflict.id.as_str(), month_of(conflict.detected_at));
            let detection = ConflictRecord { resolution: None, ..conflict.clone() };
            writes.one(&statements.insert_conflict, (id, encode(&detection)));
            writes.one(&statements.insert_conflict_of_org, (conflict.org_id.as_str(), month, conflict.detected_at, id));
            writes.one(&statements.insert_conflict_month, (conflict.org_id.as_str(), month));
            let device = conflict.device_record.device_id.as_str();
            let other =
                conflict.server_record.as_ref().map(|record| record.device_id.as_str()).filter(|d| *d != device);
            for device_id in std::iter::once(device).chain(other) {
                writes.one(&statements.insert_conflict_of_device, (device_id, id));
            }
        }
        self.audit_writes(&commit.audit, &mut writes);
        for counts in &commit.stats {
            let SyncCounts { org_id, device_id, at, key, totals } = counts;
            let (hour, key, totals) = (at.div_euclid(3_600_000) * 3_600_000, *key as i64, encode(totals));
            let (day, year) = (UtcDay::of_unix_ms(*at).0, year_of(*at));
            writes.one(
                &statements.insert_sync_stats,
                (org_id.as_str(), day, hour, device_id.as_str(), key, totals.clone()),
            );
            writes.one(&statements.insert_device_stats, (device_id.as_str(), year, *at, key, totals));
        }
        writes
    }

    /// One day's audit entries of a trail after `after` (or from `since`), up to `limit`.
    async fn audit_day(
        &self,
        scope: AuditScope<'_>,
        day: i32,
        since: i64,
        after: Option<&AuditCursor>,
        limit: i32,
    ) -> Result<Vec<(Vec<u8>, AuditCursor)>, StoreError> {
        let statements = &self.statements;
        let rows: Vec<(i64, String, i64, Vec<u8>)> = match (scope, after) {
            (AuditScope::Device(device_id), None) => {
                let rows: Vec<(i64, i64, Vec<u8>)> =
                    self.rows(&statements.select_audit_of_device_from, (device_id, day, since, limit)).await?;
                rows.into_iter().map(|(at, key, event)| (at, String::new(), key, event)).collect()
            }
            (AuditScope::Device(device_id), Some(after)) => {
                let values = (device_id, day, after.at, after.key, limit);
                let rows: Vec<(i64, i64, Vec<u8>)> =
                    self.rows(&statements.select_audit_of_device_after, values).await?;
                rows.into_iter().map(|(at, key, event)| (at, String::new(), key, event)).collect()
            }
            (AuditScope::Org(org_id), None) => {
                self.rows(&statements.select_audit_of_org_from, (org_id, day, since, limit)).await?
            }
            (AuditScope::Org(org_id), Some(after)) => {
                let values = (org_id, day, after.at, after.device_id.as_str(), after.key, limit);
                self.rows(&statements.select_audit_of_org_after, values).await?
            }
        };
        let owner = scope_owner(scope);
        Ok(rows
            .into_iter()
            .map(|(at, device_id, key, event)| (event, AuditCursor { owner: owner.clone(), day, at, device_id, key }))
            .collect())
    }
}

/// A conflict as `conflicts` holds it: the detection and the resolution.
type ConflictRow = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One write of a commit, running.
type PendingWrite<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// An enrolment as `devices` holds it.
type DeviceRow = (String, Option<String>, Vec<u8>, i64, Option<i64>);

/// What became of a conditional write.
enum Conditional {
    Applied,
    NotApplied,
    /// Timed out or cut off: it may or may not have applied.
    Unknown(Box<ExecutionError>),
}

/// A commit's writes, run concurrently.
struct Writes<'a> {
    session: &'a Session,
    pending: Vec<PendingWrite<'a>>,
}

impl<'a> Writes<'a> {
    fn new(session: &'a Session) -> Self {
        Writes { session, pending: Vec::new() }
    }

    fn one(&mut self, statement: &'a PreparedStatement, values: impl SerializeRow + Send + 'a) {
        let session = self.session;
        self.pending.push(Box::pin(async move {
            session.execute_unpaged(statement, values).await.map(drop).map_err(|error| cql_error(&error, "write"))
        }));
    }

    /// Rows of one partition, in unlogged batches: one mutation each on the replicas.
    fn batched<R: SerializeRow + Send + Sync + 'a>(&mut self, statement: &'a PreparedStatement, rows: Vec<R>) {
        let session = self.session;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<R> = rows.by_ref().take(BATCH_ROWS).collect();
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..chunk.len() {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            if let Some(consistency) = statement.get_consistency() {
                batch.set_consistency(consistency);
            }
            self.pending.push(Box::pin(async move {
                session.batch(&batch, chunk).await.map(drop).map_err(|error| cql_error(&error, "batch write"))
            }));
        }
    }

    /// Runs every write; the first failure fails the whole.
    async fn run(self) -> Result<(), StoreError> {
        futures_util::stream::iter(self.pending).buffer_unordered(CONCURRENT_WRITES).try_collect::<()>().await
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn enrol_device(&self, enrolment: &DeviceEnrolment) -> Result<(), StoreError> {
        let DeviceEnrolment { device_id, org_id, employee_id, secret, enrolled_at, .. } = enrolment;
        let values = (device_id.as_str(), org_id.as_str(), employee_id.as_deref(), &secret[..], *enrolled_at);
        let won = match self.conditional(&self.statements.insert_device, values).await? {
            Conditional::Applied => true,
            // Lost, or unknown: what stands decides. Our own enrolment standing is a
            // retry of a write that did land (its audit entry may not have).
            Conditional::NotApplied | Conditional::Unknown(_) => {
                self.read_device(device_id, true).await?.is_some_and(|stored| stored == *enrolment)
            }
        };
        if !won {
            return Err(StoreError::AlreadyExists);
        }
        let event = AuditKind::DeviceEnrolled { employee_id: employee_id.clone() };
        let audit = [enrolment.audit(*enrolled_at, event)];
        let mut writes = Writes::new(&self.session);
        writes.one(&self.statements.insert_org_device, (org_id.as_str(), device_id.as_str()));
        self.audit_writes(&audit, &mut writes);
        writes.run().await
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceEnrolment>, StoreError> {
        self.read_device(device_id, false).await
    }

    async fn revoke_device(&self, device_id: &str, at: i64) -> Result<Option<DeviceEnrolment>, StoreError> {
        if self.read_device(device_id, false).await?.is_none() {
            return Ok(None);
        }
        if let Conditional::Unknown(error) = self.conditional(&self.statements.revoke_device, (at, device_id)).await? {
            tracing::warn!(%error, device_id, "a revocation's outcome is unknown; reading it back");
        }
        // Whoever won, the revocation that stands gets its one audit entry (again, if
        // an earlier call was cut off before filing it: the same key, the same row).
        let Some(device) = self.read_device(device_id, true).await? else { return Ok(None) };
        let Some(revoked_at) = device.revoked_at else {
            return Err(StoreError::Unavailable(format!("device {device_id}: the revocation did not land")));
        };
        let audit = [device.audit(revoked_at, AuditKind::DeviceRevoked)];
        let mut writes = Writes::new(&self.session);
        self.audit_writes(&audit, &mut writes);
        writes.run().await?;
        Ok(Some(device))
    }

    async fn device_progress(&self, device_id: &str) -> Result<DeviceProgress, StoreError> {
        let rows: Vec<(Option<Vec<u8>>,)> = self.rows(&self.statements.select_progress, (device_id,)).await?;
        match rows.into_iter().next() {
            Some((Some(progress),)) => decode(&progress),
            _ => Ok(DeviceProgress::default()),
        }
    }

    async fn devices_waiting_for_evaluation(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self.all_rows(&self.statements.select_waiting, ()).await?;
        Ok(rows.into_iter().map(|(device_id,)| device_id).collect())
    }

    async fn seq_entries(&self, device_id: &str, seqs: &[u64]) -> Result<Vec<Option<SeqEntry>>, StoreError> {
        let mut buckets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for &seq in seqs {
            buckets.entry((seq / SEQ_BUCKET) as i64).or_default().push(seq as i64);
        }
        let mut found: BTreeMap<u64, SeqEntry> = BTreeMap::new();
        let reads = buckets.into_iter().map(|(bucket, seqs)| async move {
            self.rows::<(i64, Vec<u8>)>(&self.statements.select_seqs, (device_id, bucket, seqs)).await
        });
        for rows in futures_util::future::try_join_all(reads).await? {
            for (seq, entry) in rows {
                found.insert(seq as u64, decode(&entry)?);
            }
        }
        Ok(seqs.iter().map(|seq| found.remove(seq)).collect())
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.writes_of(commit).run().await?;
        // The commit point: only now that every row it describes is durable.
        if let Some(device) = &commit.device {
            let waiting = device.progress.evaluation.waiting_since.is_some();
            let values = (device.device_id.as_str(), encode(&device.progress), waiting);
            self.execute(&self.statements.insert_progress, values).await?;
        }
        Ok(())
    }

    async fn resolve_conflict(
        &self,
        conflict_id: &str,
        resolution: &AdminResolution,
        effects: &Commit,
    ) -> Result<Resolved, StoreError> {
        if self.read_conflict(conflict_id, false).await?.is_none() {
            return Ok(Resolved::NotFound);
        }
        let values = (encode(resolution), conflict_id);
        if let Conditional::Unknown(error) = self.conditional(&self.statements.resolve_conflict, values).await? {
            tracing::warn!(%error, conflict_id, "a resolution's outcome is unknown; reading it back");
        }
        let Some(conflict) = self.read_conflict(conflict_id, true).await? else { return Ok(Resolved::NotFound) };
        match &conflict.resolution {
            Some(standing) if standing.same_decision(resolution) => {
                self.commit(effects).await?;
                Ok(Resolved::Now(conflict))
            }
            Some(_) => Ok(Resolved::Already(conflict)),
            None => Err(StoreError::Unavailable(format!("conflict {conflict_id}: the resolution did not land"))),
        }
    }

    async fn timeline(&self, org_id: &str, employee_id: &str, day: UtcDay) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(Vec<u8>,)> =
            self.all_rows(&self.statements.select_timeline, (org_id, employee_id, day.0)).await?;
        rows.iter().map(|(entry,)| decode(entry)).collect()
    }

    async fn timeline_days(&self, org_id: &str, employee_id: &str) -> Result<Vec<UtcDay>, StoreError> {
        let rows: Vec<(i32,)> = self.all_rows(&self.statements.select_timeline_days, (org_id, employee_id)).await?;
        Ok(rows.into_iter().map(|(day,)| UtcDay(day)).collect())
    }

    async fn conflict(&self, conflict_id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        self.read_conflict(conflict_id, false).await
    }

    async fn conflicts(
        &self,
        org_id: &str,
        open: Option<bool>,
        page: Page<'_>,
    ) -> Result<Vec<(ConflictRecord, Cursor)>, StoreError> {
        let after: ConflictCursor = page
            .after
            .and_then(|bytes| rmp_serde::from_slice::<ConflictCursor>(bytes).ok())
            .filter(|cursor| cursor.0 == org_id)
            .unwrap_or_else(|| (org_id.to_string(), i32::MIN, i64::MIN, String::new()));
        let months: Vec<(i32,)> = self.all_rows(&self.statements.select_conflict_months, (org_id, after.1)).await?;
        let mut found = Vec::with_capacity(page.limit);
        for (month,) in months {
            let (mut at, mut id) =
                if month == after.1 { (after.2, after.3.clone()) } else { (i64::MIN, String::new()) };
            loop {
                let want = (page.limit - found.len()) as i32;
                let values = (org_id, month, at, id.as_str(), want.max(1));
                let rows: Vec<(i64, String)> = self.rows(&self.statements.select_conflicts_of_org, values).await?;
                let Some(last) = rows.last().cloned() else { break };
                for (detected_at, conflict_id) in rows {
                    let cursor = encode(&(org_id, month, detected_at, &conflict_id));
                    let conflict = self.read_conflict(&conflict_id, false).await?.ok_or_else(|| {
                        StoreError::Corrupt(format!("conflict {conflict_id} is listed but not stored"))
                    })?;
                    // A row left by an earlier detection of the same conflict: listed
                    // where its stored detection time is.
                    let current = conflict.detected_at == detected_at;
                    if current && open.is_none_or(|open| open == conflict.is_open()) {
                        found.push((conflict, cursor));
                        if found.len() == page.limit {
                            return Ok(found);
                        }
                    }
                }
                (at, id) = last;
            }
        }
        Ok(found)
    }

    async fn open_conflicts_of_device(&self, device_id: &str) -> Result<Vec<ConflictRecord>, StoreError> {
        let ids: Vec<(String,)> = self.all_rows(&self.statements.select_conflicts_of_device, (device_id,)).await?;
        let mut open = Vec::new();
        for (conflict_id,) in ids {
            if let Some(conflict) = self.read_conflict(&conflict_id, false).await?.filter(ConflictRecord::is_open) {
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
        let owner = scope_owner(scope);
        // A cursor counts only inside this listing's window: one from another listing
        // must not read someone else's trail.
        let after = page
            .after
            .and_then(|bytes| rmp_serde::from_slice::<AuditCursor>(bytes).ok())
            .filter(|cursor| cursor.owner == owner && (since..=until).contains(&cursor.at));
        let (first_day, last_day) = (day_of(since), day_of(until));
        let from_day = after.as_ref().map_or(first_day, |cursor| cursor.day);
        let values = (owner.0.as_str(), owner.1.as_str(), from_day, last_day);
        let days: Vec<(i32,)> = self.all_rows(&self.statements.select_audit_days, values).await?;
        let mut found = Vec::with_capacity(page.limit);
        for (day,) in days {
            let mut after_here = after.clone().filter(|cursor| cursor.day == day);
            while found.len() < page.limit {
                let want = (page.limit - found.len()) as i32;
                let rows = self.audit_day(scope, day, since, after_here.as_ref(), want).await?;
                let Some((_, last)) = rows.last() else { break };
                after_here = Some(last.clone());
                for (event, cursor) in rows {
                    if cursor.at > until {
                        return Ok(found);
                    }
                    found.push((decode(&event)?, encode(&cursor)));
                }
            }
            if found.len() == page.limit {
                break;
            }
        }
        Ok(found)
    }

    async fn sync_totals(&self, org_id: &str, since: i64) -> Result<SyncTotals, StoreError> {
        let hour = since.div_euclid(3_600_000) * 3_600_000;
        let (first, last) = (UtcDay::of_unix_ms(hour).0, UtcDay::of_unix_ms(now_ms()).0);
        let reads = (first..=last).map(|day| async move {
            self.all_rows::<(Vec<u8>,)>(&self.statements.select_sync_stats, (org_id, day, hour)).await
        });
        let days: Vec<Vec<(Vec<u8>,)>> = futures_util::stream::iter(reads).buffer_unordered(16).try_collect().await?;
        sum(days.iter().flatten())
    }

    async fn device_totals(&self, device_id: &str) -> Result<SyncTotals, StoreError> {
        let reads = (FIRST_STATS_YEAR..=year_of(now_ms()) + 1).map(|year| async move {
            self.all_rows::<(Vec<u8>,)>(&self.statements.select_device_stats, (device_id, year)).await
        });
        let years = futures_util::future::try_join_all(reads).await?;
        sum(years.iter().flatten())
    }

    async fn devices_of_org(&self, org_id: &str, page: Page<'_>) -> Result<Vec<(DeviceEnrolment, Cursor)>, StoreError> {
        let after = page.after.and_then(|after| std::str::from_utf8(after).ok()).unwrap_or("");
        let limit = page.limit.min(i32::MAX as usize) as i32;
        let ids: Vec<(String,)> = self.rows(&self.statements.select_org_devices, (org_id, after, limit)).await?;
        let reads = ids.iter().map(|(device_id,)| self.read_device(device_id, false));
        let devices = futures_util::future::try_join_all(reads).await?;
        Ok(devices
            .into_iter()
            .flatten()
            .map(|device| {
                let cursor = device.device_id.clone().into_bytes();
                (device, cursor)
            })
            .collect())
    }

    async fn org_settings(&self, org_id: &str) -> Result<OrgSettings, StoreError> {
        let rows: Vec<(Option<Vec<u8>>,)> = self.rows(&self.statements.select_org_settings, (org_id,)).await?;
        match rows.into_iter().next() {
            Some((Some(settings),)) => decode(&settings),
            _ => Ok(OrgSettings::default()),
        }
    }

    async fn put_org_settings(&self, org_id: &str, settings: &OrgSettings) -> Result<(), StoreError> {
        self.execute(&self.statements.insert_org_settings, (org_id, encode(settings))).await.map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A point read at the configured consistency: red while too few replicas
        // answer. Whether the key exists does not matter.
        self.org_settings("otg-readiness-probe").await.map(drop)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every acked write is already on its replicas; nothing is buffered here.
        Ok(())
    }
}

/// Where an audit listing goes on: the trail's owner, and the position in it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AuditCursor {
    owner: (String, String),
    day: i32,
    at: i64,
    device_id: String,
    key: i64,
}

/// Where a conflict listing goes on: (org, month, detected_at, conflict id).
type ConflictCursor = (String, i32, i64, String);

/// Whose trail: ("d", device) or ("o", org), as `audit_days` keys it.
fn scope_owner(scope: AuditScope<'_>) -> (String, String) {
    match scope {
        AuditScope::Device(device_id) => ("d".into(), device_id.to_string()),
        AuditScope::Org(org_id) => ("o".into(), org_id.to_string()),
    }
}

fn rows_of<T>(result: QueryResult) -> Result<Vec<T>, StoreError>
where
    T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
{
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let typed = rows.rows::<T>().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    typed.map(|row| row.map_err(|error| StoreError::Corrupt(error.to_string()))).collect()
}

/// The `[applied]` column of a conditional write's answer.
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let row: scylla::value::Row = rows.first_row().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(matches!(row.columns.first(), Some(Some(scylla::value::CqlValue::Boolean(true)))))
}

fn sum<'a>(rows: impl Iterator<Item = &'a (Vec<u8>,)>) -> Result<SyncTotals, StoreError> {
    let mut totals = SyncTotals::default();
    for (counts,) in rows {
        totals.add(&decode(counts)?);
    }
    Ok(totals)
}

fn status_name(entry: &TimelineEntry) -> &'static str {
    match entry.status {
        super::RecordStatus::Active => "active",
        super::RecordStatus::Pending => "pending",
        super::RecordStatus::Superseded => "superseded",
        super::RecordStatus::Discarded => "discarded",
    }
}

/// The UTC day of a unix ms time, for any `i64` (a listing's open end included).
fn day_of(at: i64) -> i32 {
    at.div_euclid(86_400_000).clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

/// Months since 1970-01 of a unix ms time, UTC.
fn month_of(at: i64) -> i32 {
    let date = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    (date.year() - 1970) * 12 + date.month0() as i32
}

fn year_of(at: i64) -> i32 {
    chrono::DateTime::from_timestamp_millis(at).unwrap_or_default().year()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster the test command started (`scripts/cassandra up`), named by
    /// `OTG_SCYLLA_NODES`; the schema is applied to a test keyspace first. `None`
    /// outside the test command (`cargo test` alone), which then skips with a note, and
    /// a failure in CI, where the cluster must be there.
    pub(crate) async fn test_store() -> Option<ScyllaStore> {
        let Ok(nodes) = std::env::var("OTG_SCYLLA_NODES") else {
            assert!(std::env::var_os("CI").is_none(), "CI runs scripts/test, which starts a cluster");
            eprintln!("OTG_SCYLLA_NODES is not set: skipped (scripts/test starts a Cassandra cluster and sets it)");
            return None;
        };
        let nodes: Vec<String> = nodes.split(',').map(str::to_string).collect();
        let replication = Replication::Simple(nodes.len().min(3) as u32);
        let options = ScyllaStoreOptions::new(nodes, "otg_store_tests");
        migrate(&options, &replication).await.expect("migrate the test keyspace");
        Some(ScyllaStore::open(&options).await.expect("open the store"))
    }

    #[actix_rt::test]
    async fn passes_the_store_conformance_suite() {
        let Some(store) = test_store().await else { return };
        super::super::conformance::run_all(&store).await;
        store.close().await.unwrap();
    }

    #[actix_rt::test]
    async fn a_keyspace_without_the_schema_is_refused_with_the_command_that_fixes_it() {
        let Some(store) = test_store().await else { return };
        drop(store);
        let nodes: Vec<String> = std::env::var("OTG_SCYLLA_NODES").unwrap().split(',').map(str::to_string).collect();
        let options = ScyllaStoreOptions::new(nodes, "otg_never_migrated");
        let Err(StoreError::Failed(message)) = ScyllaStore::open(&options).await else {
            panic!("a keyspace that was never migrated must be refused")
        };
        assert!(message.contains("otg-gateway migrate"), "{message}");
    }
}
